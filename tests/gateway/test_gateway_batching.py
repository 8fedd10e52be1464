"""Dynamic batching: concurrent clients merge, answers split back exactly, failures stay
inside their batch, a full queue is refused."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.http as triton

from gateway.core.batching import Batcher, BatchPolicy
from gateway.core.errors import InferenceError, QueueFull
from gateway.core.stats import VersionStats


def _infer(gateway, model, x):
    tensor = triton.InferInput("X", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = gateway.client().infer(model, [tensor])
    return result.as_numpy("OUT"), result.as_numpy("SUM")


def _stats(gateway, model):
    return gateway.client().get_inference_statistics(model)["model_stats"][0]


def test_concurrent_clients_merge_and_answers_equal_unbatched(gateway):
    rng = np.random.default_rng(7)
    inputs = [rng.normal(size=(1 + i % 3, 4)).astype(np.float32) for i in range(24)]  # batch 1-3 each
    # Unbatched reference: one request at a time on the same weights, no queue delay.
    before = _stats(gateway, "mlp")["execution_count"]
    alone = [_infer(gateway, "mlp", x) for x in inputs]
    assert _stats(gateway, "mlp")["execution_count"] - before == len(inputs)  # really one per run

    start = _stats(gateway, "mlp_batched")
    with ThreadPoolExecutor(len(inputs)) as pool:
        together = list(pool.map(lambda x: _infer(gateway, "mlp_batched", x), inputs))
    end = _stats(gateway, "mlp_batched")
    executions = end["execution_count"] - start["execution_count"]
    inferences = end["inference_count"] - start["inference_count"]
    assert inferences == sum(len(x) for x in inputs)
    assert executions < inferences, f"{executions} executions for {inferences} inferences: nothing merged"
    assert any(b["batch_size"] > 3 for b in end["batch_stats"])
    for (out_a, sum_a), (out_b, sum_b) in zip(alone, together):
        np.testing.assert_array_equal(out_a, out_b)  # exact, not approximate
        np.testing.assert_array_equal(sum_a, sum_b)


async def test_a_failing_batch_fails_only_its_requests():
    async def run(inputs):  # a real computation; the injected failure is a poisoned row
        x = inputs["X"]
        if (x < 0).any():
            raise ValueError("poisoned row")
        return {"Y": x * 2}

    batcher = Batcher(run, BatchPolicy(max_batch_size=2, max_queue_delay_us=0), concurrency=1,
                      stats=VersionStats(), name="test")
    batcher.start()
    rows = [np.array([[1.0]]), np.array([[-1.0]]), np.array([[3.0]]), np.array([[4.0]])]
    # All four are queued before the scheduler runs: batches are (0, 1) and (2, 3).
    results = await asyncio.gather(*(batcher.submit({"X": r}, 1) for r in rows), return_exceptions=True)
    await batcher.close()
    assert isinstance(results[0], InferenceError) and isinstance(results[1], InferenceError)
    assert "poisoned row" in results[1].message
    np.testing.assert_array_equal(results[2][0]["Y"], [[6.0]])
    np.testing.assert_array_equal(results[3][0]["Y"], [[8.0]])


async def test_full_queue_is_refused_with_429():
    release, started = asyncio.Event(), asyncio.Event()

    async def run(inputs):
        started.set()
        await release.wait()
        return inputs

    batcher = Batcher(run, BatchPolicy(max_batch_size=0, max_queue_size=2), concurrency=1,
                      stats=VersionStats(), name="test")
    batcher.start()
    first = asyncio.create_task(batcher.submit({"X": np.zeros(1)}, 1))
    await started.wait()  # the first request has left the queue for the (blocked) instance
    queued = [asyncio.create_task(batcher.submit({"X": np.zeros(1)}, 1)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull) as info:
        await batcher.submit({"X": np.zeros(1)}, 1)
    assert info.value.status == 429 and "queue full" in info.value.message
    release.set()
    await asyncio.gather(first, *queued)
    await batcher.close()


async def test_preferred_sizes_form_the_largest_preferred_batch_first():
    sizes: list[int] = []

    async def run(inputs):
        sizes.append(len(inputs["X"]))
        return {"Y": inputs["X"] * 2}

    # Triton's rule: of 7 queued rows with preferred sizes 2 and 4, send 4 at once, then 2
    # at once, and let the last one wait out the queue delay.
    batcher = Batcher(run, BatchPolicy(max_batch_size=8, max_queue_delay_us=20_000, preferred_batch_sizes=(2, 4)),
                      concurrency=2, stats=VersionStats(), name="test")
    batcher.start()
    rows = [np.array([[float(i)]]) for i in range(7)]
    results = await asyncio.gather(*(batcher.submit({"X": r}, 1) for r in rows))
    await batcher.close()
    assert sizes == [4, 2, 1]
    for r, (outputs, timing) in zip(rows, results):
        np.testing.assert_array_equal(outputs["Y"], r * 2)


class _CountingBatcher(Batcher):
    """Counts the scheduler's scans of the queue (how often it looks for a batch)."""

    scans = 0

    def _candidates(self, head):
        self.scans += 1
        return super()._candidates(head)


async def _doubled(inputs):
    return {"Y": inputs["X"] * 2}


async def test_arrivals_during_the_delay_do_not_rescan_the_queue_per_request():
    batcher = _CountingBatcher(_doubled, BatchPolicy(max_batch_size=64, max_queue_delay_us=60_000_000),
                               concurrency=1, stats=VersionStats(), name="test")
    batcher.start()
    rows = [np.array([[float(i)]]) for i in range(20)]
    tasks = []
    for r in rows:  # one at a time, each queued before the next arrives
        tasks.append(asyncio.create_task(batcher.submit({"X": r}, 1)))
        while batcher.pending < len(tasks):
            await asyncio.sleep(0)
    await asyncio.sleep(0)
    batcher.flush()  # stop waiting out the (long) delay
    results = await asyncio.gather(*tasks)
    await batcher.close()
    assert batcher.scans <= 3  # the first arrival, the flush: not one scan per request
    for r, (outputs, timing) in zip(rows, results):
        np.testing.assert_array_equal(outputs["Y"], r * 2)
        assert timing.batch_size == 20


async def test_a_full_batch_runs_without_waiting_out_the_delay():
    batcher = Batcher(_doubled, BatchPolicy(max_batch_size=4, max_queue_delay_us=60_000_000), concurrency=1,
                      stats=VersionStats(), name="test")
    batcher.start()
    first = [asyncio.create_task(batcher.submit({"X": np.array([[float(i)]])}, 1)) for i in range(3)]
    while batcher.pending < 3:
        await asyncio.sleep(0)
    await asyncio.sleep(0)  # the scheduler is waiting out the delay for a batch of 3
    last = await batcher.submit({"X": np.array([[3.0]])}, 1)  # the 4th row fills it: it runs now
    results = await asyncio.gather(*first)
    await batcher.close()
    assert [t.batch_size for _, t in results] == [4, 4, 4] and last[1].batch_size == 4
    assert batcher.pending == 0
