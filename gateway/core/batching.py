"""The adaptive batcher: one bounded queue per priority level and one future per request;
merge, run, split.

One scheduling task per loaded version waits for a free instance, then forms a batch from
the head of the queue: requests whose non-batch shapes and datatypes match, in service order
(the highest priority level first; within a level, arrival order, then the requests held
back past their timeout), up to ``max_batch_size`` rows. As in Triton, when a prefix of them
adds up to a preferred size it runs the largest such prefix at once and leaves the rest
queued; otherwise it runs everything at ``max_batch_size`` rows, or waits for more requests
until the oldest one has queued for ``max_queue_delay_microseconds``. While every instance is
busy, requests accumulate, so batches grow under load even with no delay (Triton's behaviour).
An arrival wakes the scheduler out of that wait only when it can change the decision (the
queue may now fill a batch, preferred sizes, several levels), so the queue is scanned once per
batch, not once per request, and each request leaves the queue from its head in O(1).

A request whose timeout passes while queued is rejected at that moment (``QueueTimeout``), or
under ``timeout_action: DELAY`` served after everything else at its level (the policies are in
``scheduling.py``). A request whose caller goes away (its awaiting task cancelled: an HTTP
disconnect, a gRPC cancel or deadline) leaves the queue and never runs.

A batch that fails fails only the requests in it. A model without batching
(``max_batch_size`` 0) runs each request alone through the same bounded queues.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence

import numpy as np

from .errors import GatewayError, InferenceError, ModelNotReady, QueueFull, QueueTimeout
from .scheduling import BATCH_SCHEDULE, NO_SCHEDULE, BatchPolicy, QueuePolicy, Schedule
from .stats import Timing, VersionStats
from .tracing import open_batch

RunBatch = Callable[[dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]


class _Request:
    __slots__ = ("inputs", "rows", "key", "future", "level", "schedule", "timer", "enqueued_ns", "trace")

    def __init__(self, inputs: dict[str, np.ndarray], rows: int, future: asyncio.Future, level: int,
                 schedule: Schedule, trace=None) -> None:
        self.trace = trace  # its RequestTrace when it is traced (tracing.py), else None
        self.inputs = inputs
        self.rows = rows
        self.key = _merge_key(inputs)
        self.future = future
        self.level = level
        self.schedule = schedule
        self.timer: asyncio.TimerHandle | None = None  # its timeout, while it waits
        self.enqueued_ns = time.perf_counter_ns()


class _Level:
    """One priority level's queue: requests in arrival order, then those held back past
    their timeout under DELAY (Triton's delayed queue)."""

    __slots__ = ("policy", "waiting", "delayed")

    def __init__(self, policy: QueuePolicy) -> None:
        self.policy = policy
        self.waiting: deque[_Request] = deque()
        self.delayed: deque[_Request] = deque()

    def __len__(self) -> int:
        return len(self.waiting) + len(self.delayed)

    def __iter__(self) -> Iterator[_Request]:
        yield from self.waiting
        yield from self.delayed

    def remove(self, request: _Request) -> None:
        """Take ``request`` out, wherever it is (a cancel or a batch formed out of order)."""
        for line in (self.waiting, self.delayed):
            if line and line[0] is request:  # the usual case: the head, O(1)
                line.popleft()
                return
            try:
                line.remove(request)
                return
            except ValueError:
                pass


def _merge_key(inputs: dict[str, np.ndarray]) -> tuple:
    # Requests built from one signature list their inputs in one order: no sort needed (a
    # different order only makes two requests unmergeable, never merges wrong ones).
    return tuple([(name, a.dtype.str, a.shape[1:]) for name, a in inputs.items()])


class Batcher:
    def __init__(self, run: RunBatch, policy: BatchPolicy, *, concurrency: int, stats: VersionStats,
                 name: str = "") -> None:
        self._run = run
        self.policy = policy
        self._stats = stats
        self._name = name
        self._levels: dict[int, _Level] = {}  # created on first use, kept in service order
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task] = set()
        self._closing = False
        self._flush = False
        self._filling = False  # the scheduler is waiting out a batch's delay
        self._queued_rows = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._schedule(), name=f"batcher {self._name}")

    @property
    def pending(self) -> int:
        return sum(map(len, self._levels.values()))

    @property
    def delayed(self) -> int:
        """Requests past their timeout, held back under DELAY."""
        return sum(len(level.delayed) for level in self._levels.values())

    async def submit(self, inputs: dict[str, np.ndarray], rows: int, *, priority: int = 0,
                     timeout_us: int = 0, trace=None) -> tuple[dict[str, np.ndarray], Timing]:
        """Queue a request and wait for its answer. ``priority`` and ``timeout_us`` are the
        request's own (0: not given); the policy decides what they count for. ``trace``: the
        request's trace, when it is traced."""
        if self._closing:
            raise ModelNotReady(f"{self._name} is unloading")
        level_no = self.policy.level_of(priority)
        level = self._level(level_no)
        if len(level) >= level.policy.max_queue_size:
            at = f" at priority level {level_no}" if level_no else ""
            raise QueueFull(f"{self._name}: queue full ({len(level)} requests waiting{at}); retry later")
        loop = asyncio.get_running_loop()
        schedule = Schedule(priority, timeout_us) if priority or timeout_us else NO_SCHEDULE
        request = _Request(inputs, rows, loop.create_future(), level_no, schedule, trace)
        timeout = level.policy.timeout_for(timeout_us)
        if timeout:
            request.timer = loop.call_later(timeout / 1e6, self._expire, request, timeout)
        level.waiting.append(request)
        self._queued_rows += rows
        self._stats.pending += 1
        if self._worth_waking():
            self._arrived.set()
        try:
            return await request.future
        except asyncio.CancelledError:
            self._forget(request)  # the caller went away: it must never run
            raise

    def _worth_waking(self) -> bool:
        """Whether an arrival can change what the scheduler does now. While it waits out a
        batch's delay, only a batch that may now be full or preferred, or a new priority
        level, can; waking it for every arrival would rescan the queue per request."""
        policy = self.policy
        return (not self._filling or policy.max_batch_size == 0 or self._queued_rows >= policy.max_batch_size
                or bool(policy.preferred_batch_sizes) or len(self._levels) > 1)

    def flush(self) -> None:
        """Stop waiting for batches to fill (shutting down: answer what is queued now)."""
        self._flush = True
        self._arrived.set()

    async def close(self) -> None:
        """Refuse new requests, run everything queued, wait for running batches."""
        self._closing = True
        self.flush()
        if self._task is not None:
            await self._task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    # ---------------------------------------------------------------- queues
    def _level(self, level: int) -> _Level:
        queue = self._levels.get(level)
        if queue is None:
            queue = _Level(self.policy.queue_policy(level))
            self._levels = dict(sorted({**self._levels, level: queue}.items()))
        return queue

    def _queued(self) -> Iterator[_Request]:
        """Every queued request, in service order."""
        for level in self._levels.values():
            yield from level

    def _expire(self, request: _Request, timeout_us: int) -> None:
        """A request's timeout passed while it waited (its timer is cancelled once it leaves
        the queue, so it is still in its level's waiting line)."""
        request.timer = None
        level = self._levels[request.level]
        level.waiting.remove(request)
        if level.policy.delay:
            level.delayed.append(request)
        else:
            self._left(request)
            if not request.future.done():
                request.future.set_exception(QueueTimeout(
                    f"{self._name}: request timeout expired: waited in the queue longer than {timeout_us} us"))
        self._arrived.set()  # a batch being formed may have lost a member

    def _forget(self, request: _Request) -> None:
        """Take a request that will never run out of the queue, if it is still there."""
        if request.timer is not None:
            request.timer.cancel()
            request.timer = None
        if request.key is not None:  # not yet taken into a batch
            self._levels[request.level].remove(request)
            self._left(request)
            self._arrived.set()  # a batch being formed may have lost a member

    def _left(self, request: _Request) -> None:
        request.key = None  # marks it out of the queue
        self._queued_rows -= request.rows
        self._stats.pending -= 1

    # ------------------------------------------------------------ scheduling
    async def _schedule(self) -> None:
        while True:
            while not self.pending:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            await self._slots.acquire()
            batch = await self._form_batch()
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _form_batch(self) -> list[_Request]:
        policy = self.policy
        while True:
            head = self._head()
            if head is None:
                return []
            if policy.max_batch_size == 0:
                return self._take([head])
            chosen, blocked = self._candidates(head)
            preferred = self._largest_preferred(chosen)
            if preferred:
                return self._take(chosen[:preferred])
            rows = sum(r.rows for r in chosen)
            deadline_ns = min(r.enqueued_ns for r in chosen) + policy.max_queue_delay_us * 1000
            wait_ns = deadline_ns - time.perf_counter_ns()
            if rows >= policy.max_batch_size or blocked or self._flush or wait_ns <= 0:
                return self._take(chosen)
            # The deadline sets the same event an arrival would: no task cancellation and
            # TimeoutError per batch, as asyncio.timeout would cost.
            self._arrived.clear()
            self._filling = True
            deadline = asyncio.get_running_loop().call_later(wait_ns / 1e9, self._arrived.set)
            try:
                await self._arrived.wait()
            finally:
                deadline.cancel()
                self._filling = False

    def _head(self) -> _Request | None:
        """The first queued request in service order, dropping answered ones on the way:
        cancelled requests whose task has not yet run its clean-up (a cancel lands on the
        future first)."""
        for level in self._levels.values():
            for line in (level.waiting, level.delayed):
                while line:
                    if not line[0].future.done():
                        return line[0]
                    self._forget(line[0])
        return None

    def _candidates(self, head: _Request) -> tuple[list[_Request], bool]:
        """Requests that can join the head's batch, and whether a matching one did not fit."""
        chosen, rows = [], 0
        for request in self._queued():
            if request.key != head.key or request.future.done():
                continue
            if rows + request.rows > self.policy.max_batch_size:
                return chosen, True
            chosen.append(request)
            rows += request.rows
        return chosen, False

    def _largest_preferred(self, chosen: list[_Request]) -> int:
        """How many of ``chosen`` make the largest preferred batch size, or 0 if none does.

        Triton sends such a batch at once, without waiting out the delay, and leaves the
        rest queued: with several instances, the next one takes them.
        """
        sizes = self.policy.preferred_batch_sizes
        best, rows = 0, 0
        for count, request in enumerate(chosen, start=1):
            rows += request.rows
            if rows in sizes:
                best = count
        return best

    def _take(self, chosen: list[_Request]) -> list[_Request]:
        for request in chosen:
            if request.timer is not None:
                request.timer.cancel()
                request.timer = None
            self._levels[request.level].remove(request)  # in queue order: each is at the head
            self._left(request)
        return chosen

    async def _execute(self, batch: Sequence[_Request]) -> None:
        spans = None
        try:
            # A caller may have gone away since the batch was formed: it does not run.
            batch = [r for r in batch if not r.future.done()]
            if not batch:
                return
            # This task's own context: a forwarding runtime reads the batch's priority and timeout.
            BATCH_SCHEDULE.set(Schedule.merged([r.schedule for r in batch]))
            started = time.perf_counter_ns()
            rows = [r.rows for r in batch]
            total = sum(rows)
            if len(batch) == 1:
                inputs = batch[0].inputs
            else:
                inputs = {name: np.concatenate([r.inputs[name] for r in batch]) for name in batch[0].inputs}
            merged = time.perf_counter_ns()
            spans = open_batch(batch, total, started, merged)  # None unless a request in it is traced
            outputs = await self._run(inputs)
            ran = time.perf_counter_ns()
            if len(batch) == 1:
                parts = [outputs]
            else:
                for name, array in outputs.items():
                    if array.ndim == 0 or array.shape[0] != total:
                        raise InferenceError(f"{self._name}: output {name!r} has shape {list(array.shape)}, "
                                             f"which does not split into a batch of {total}")
                bounds = np.cumsum([0, *rows])
                parts = [{name: array[bounds[i]:bounds[i + 1]] for name, array in outputs.items()}
                         for i in range(len(batch))]
            split = time.perf_counter_ns()
            self._stats.record_execution(total, merged - started, ran - merged, split - ran)
            if spans is not None:
                spans.close(ran, split)
            for request, part in zip(batch, parts):
                if not request.future.done():
                    timing = Timing(started - request.enqueued_ns, merged - started, ran - merged,
                                    split - ran, total)
                    request.future.set_result((part, timing))
        except Exception as exc:
            error = exc if isinstance(exc, GatewayError) else InferenceError(f"{self._name}: {exc}")
            if spans is not None:
                spans.fail(error)
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(error)
        finally:
            self._slots.release()
