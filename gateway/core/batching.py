"""The adaptive batcher: one bounded queue and one future per request; merge, run, split.

One scheduling task per loaded version waits for a free instance, then forms a batch from
the head of the queue: requests whose non-batch shapes and datatypes match, in arrival
order, up to ``max_batch_size`` rows. As in Triton, when a prefix of them adds up to a
preferred size it runs the largest such prefix at once and leaves the rest queued;
otherwise it runs everything at ``max_batch_size`` rows, or waits for more requests until
the oldest one has queued for ``max_queue_delay_microseconds``. While every instance is busy, requests
accumulate, so batches grow under load even with no delay (Triton's behaviour).

A batch that fails fails only the requests in it. A model without batching
(``max_batch_size`` 0) runs each request alone through the same bounded queue.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from model_repo import ModelConfig
from tritonclient.grpc import model_config_pb2 as mc

from .errors import GatewayError, InferenceError, ModelNotReady, QueueFull, QueueTimeout
from .stats import Timing, VersionStats

RunBatch = Callable[[dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int  # 0: no merging
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 1024
    queue_timeout_us: int = 0  # 0: a request may wait as long as it takes

    @classmethod
    def from_config(cls, config: ModelConfig, default_max_queue_size: int) -> BatchPolicy:
        if config.max_batch_size <= 0 or not config.HasField("dynamic_batching"):
            # No dynamic batching: each request runs as it comes (a client's own batch still counts).
            return cls(max_batch_size=0, max_queue_size=default_max_queue_size)
        db = config.dynamic_batching
        policy = db.default_queue_policy
        timeout = (policy.default_timeout_microseconds
                   if policy.timeout_action == mc.ModelQueuePolicy.REJECT else 0)
        return cls(
            max_batch_size=config.max_batch_size,
            max_queue_delay_us=db.max_queue_delay_microseconds,
            preferred_batch_sizes=tuple(sorted(s for s in db.preferred_batch_size if 0 < s <= config.max_batch_size)),
            max_queue_size=policy.max_queue_size or default_max_queue_size,
            queue_timeout_us=timeout,
        )


@dataclass(eq=False)
class _Request:
    inputs: dict[str, np.ndarray]
    rows: int
    key: tuple
    future: asyncio.Future
    enqueued_ns: int = field(default_factory=time.perf_counter_ns)


def _merge_key(inputs: dict[str, np.ndarray]) -> tuple:
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(inputs.items()))


class Batcher:
    def __init__(self, run: RunBatch, policy: BatchPolicy, *, concurrency: int, stats: VersionStats,
                 name: str = "") -> None:
        self._run = run
        self.policy = policy
        self._stats = stats
        self._name = name
        self._queue: deque[_Request] = deque()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task] = set()
        self._closing = False
        self._flush = False
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._schedule(), name=f"batcher {self._name}")

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def submit(self, inputs: dict[str, np.ndarray], rows: int) -> tuple[dict[str, np.ndarray], Timing]:
        if self._closing:
            raise ModelNotReady(f"{self._name} is unloading")
        if len(self._queue) >= self.policy.max_queue_size:
            raise QueueFull(f"{self._name}: queue full ({len(self._queue)} requests waiting); retry later")
        request = _Request(inputs, rows, _merge_key(inputs), asyncio.get_running_loop().create_future())
        self._queue.append(request)
        self._stats.pending = len(self._queue)
        self._arrived.set()
        return await request.future

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

    # ------------------------------------------------------------ scheduling
    async def _schedule(self) -> None:
        while True:
            while not self._queue:
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
            self._drop_dead()
            if not self._queue:
                return []
            if policy.max_batch_size == 0:
                return [self._take([self._queue[0]])[0]]
            chosen, blocked = self._candidates()
            preferred = self._largest_preferred(chosen)
            if preferred:
                return self._take(chosen[:preferred])
            rows = sum(r.rows for r in chosen)
            deadline_ns = self._queue[0].enqueued_ns + policy.max_queue_delay_us * 1000
            wait_ns = deadline_ns - time.perf_counter_ns()
            if rows >= policy.max_batch_size or blocked or self._flush or wait_ns <= 0:
                return self._take(chosen)
            self._arrived.clear()
            try:
                async with asyncio.timeout(wait_ns / 1e9):
                    await self._arrived.wait()
            except TimeoutError:
                pass

    def _candidates(self) -> tuple[list[_Request], bool]:
        """Requests that can join the head's batch, and whether a matching one did not fit."""
        head = self._queue[0]
        chosen, rows = [], 0
        for request in self._queue:
            if request.key != head.key:
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
        taken = set(map(id, chosen))
        self._queue = deque(r for r in self._queue if id(r) not in taken)
        self._stats.pending = len(self._queue)
        return chosen

    def _drop_dead(self) -> None:
        """Forget cancelled requests (client went away) and reject timed-out ones."""
        timeout_ns = self.policy.queue_timeout_us * 1000
        now = time.perf_counter_ns()
        keep: deque[_Request] = deque()
        for request in self._queue:
            if request.future.done():
                continue
            if timeout_ns and now - request.enqueued_ns > timeout_ns:
                request.future.set_exception(QueueTimeout(f"{self._name}: request waited longer than "
                                                          f"{self.policy.queue_timeout_us} us in the queue"))
                continue
            keep.append(request)
        if len(keep) != len(self._queue):
            self._queue = keep
            self._stats.pending = len(keep)

    async def _execute(self, batch: Sequence[_Request]) -> None:
        try:
            started = time.perf_counter_ns()
            rows = [r.rows for r in batch]
            total = sum(rows)
            if len(batch) == 1:
                inputs = batch[0].inputs
            else:
                inputs = {name: np.concatenate([r.inputs[name] for r in batch]) for name in batch[0].inputs}
            merged = time.perf_counter_ns()
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
            for request, part in zip(batch, parts):
                if not request.future.done():
                    timing = Timing(started - request.enqueued_ns, merged - started, ran - merged,
                                    split - ran, total)
                    request.future.set_result((part, timing))
        except Exception as exc:
            error = exc if isinstance(exc, GatewayError) else InferenceError(f"{self._name}: {exc}")
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(error)
        finally:
            self._slots.release()
