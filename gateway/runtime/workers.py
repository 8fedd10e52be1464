"""A fixed set of threads that run a runtime's blocking calls (session creation, warm-up,
``session.run``) off the event loop: the bounded executor the style asks for, without
``ThreadPoolExecutor``'s per-call machinery.

``loop.run_in_executor`` costs, per call, a ``concurrent.futures.Future`` with its condition
variable, the pool's idle semaphore on both sides, and a second future chained to it; measured
here at 58-65 µs of CPU per round trip, against 27-28 µs for a queue put, a worker thread and
one ``call_soon_threadsafe`` that settles the awaiting asyncio future. A batch pays it once.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Workers:
    def __init__(self, count: int, name: str) -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        # Daemon threads, as a safety net only: unload shuts them down, and an interpreter
        # exiting with a version still loaded must not wait on an idle worker.
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
                         for i in range(count)]
        for thread in self._threads:
            thread.start()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker thread. A caller that goes away does not stop a call
        already started (as with ``run_in_executor``)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._calls.put((loop, future, fn, args))
        return await future

    def shutdown(self) -> None:
        """Finish the calls queued so far, then stop every thread (blocks: call it in a thread)."""
        for _ in self._threads:
            self._calls.put(None)
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            loop, future, fn, args = call
            result = error = None
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting task as it is
                error = exc
            _settle_soon(loop, future, result, error)
            del call, future, args, result, error  # hold no batch while waiting for the next


def _settle_soon(loop: asyncio.AbstractEventLoop, future: asyncio.Future, result: Any,
                 error: BaseException | None) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, result, error)
    except RuntimeError:  # the loop is closed: nobody awaits the answer any more
        pass


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
