"""The runtime's worker threads: answers and errors reach the awaiting task, calls run in
parallel up to the thread count, a caller that goes away does not wedge a thread, and shutdown
finishes what was queued."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gateway.runtime.workers import Workers


async def test_answers_errors_and_thread_names():
    workers = Workers(1, "ort-test")
    try:
        assert await workers.run(lambda a, b: a + b, 2, 3) == 5
        assert (await workers.run(lambda: threading.current_thread().name)) == "ort-test_0"
        with pytest.raises(ZeroDivisionError):
            await workers.run(lambda: 1 / 0)
    finally:
        await asyncio.to_thread(workers.shutdown)


async def test_calls_run_in_parallel_up_to_the_thread_count():
    workers = Workers(2, "ort-test")
    both = threading.Barrier(2, timeout=60)  # only two calls running at once pass it
    try:
        assert await asyncio.gather(workers.run(both.wait), workers.run(both.wait)) in ([0, 1], [1, 0])
    finally:
        await asyncio.to_thread(workers.shutdown)


async def test_a_cancelled_caller_leaves_the_thread_free_and_shutdown_drains():
    workers = Workers(1, "ort-test")
    gate, ran = threading.Event(), []
    waiting = asyncio.create_task(workers.run(gate.wait, 60))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    queued = workers.run(ran.append, "after")
    gate.set()
    assert await queued is None
    drained = asyncio.ensure_future(workers.run(ran.append, "queued"))
    await asyncio.sleep(0)  # queued, not yet run
    await asyncio.to_thread(workers.shutdown)
    await drained
    assert ran == ["after", "queued"]
