"""Triton's schedule policy: priority levels, queue timeouts (REJECT and DELAY), per-level
queue sizes, and cancellation, on the batcher alone and over HTTP with tritonclient.

Order is made observable without timing: a gate holds the only instance busy while requests
queue, and what ran is read from the run function's own record, in call order.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from gateway.core.batching import Batcher
from gateway.core.errors import BadRequest, LoadError, QueueFull, QueueTimeout
from gateway.core.scheduling import BatchPolicy, QueuePolicy, Schedule
from gateway.core.stats import VersionStats
from model_repo import Repository

from . import models
from .conftest import make_settings, serve, wait_for

RANKED = "ranked"


# ------------------------------------------------------------------ the batcher alone
class Gate:
    """A real async run function that holds each batch until opened and records, in call
    order, the first value of every batch it was given."""

    def __init__(self) -> None:
        self.ran: list[float] = []
        self.opened = asyncio.Event()
        self.entered = asyncio.Event()
        self.on_run: Callable[[], object] | None = None  # called once, inside the next run

    async def run(self, inputs):
        self.ran.append(float(inputs["X"].flat[0]))
        self.entered.set()
        if self.on_run is not None:
            self.on_run()
            self.on_run = None
        await self.opened.wait()
        return {"Y": inputs["X"] * 2}


def x(value: float) -> dict[str, np.ndarray]:
    return {"X": np.full((1, 1), value, np.float32)}


async def started(policy: BatchPolicy) -> tuple[Batcher, Gate, asyncio.Task]:
    """A batcher on one instance, held busy by a first request (value 0)."""
    gate = Gate()
    batcher = Batcher(gate.run, policy, concurrency=1, stats=VersionStats(), name="test")
    batcher.start()
    blocker = asyncio.create_task(batcher.submit(x(0), 1))
    await gate.entered.wait()
    return batcher, gate, blocker


async def until(predicate: Callable[[], bool]) -> None:
    """Wait for a state change (the timeout only bounds a hang)."""
    async with asyncio.timeout(60):
        while not predicate():
            await asyncio.sleep(0.001)


async def queued(batcher: Batcher, count: int) -> None:
    await until(lambda: batcher.pending == count)


async def test_higher_priority_is_served_first_and_zero_means_the_default_level():
    policy = BatchPolicy(max_batch_size=0, priority_levels=3, default_priority_level=2)
    batcher, gate, blocker = await started(policy)
    tasks = []
    for value, priority in [(3, 3), (2, 0), (1, 1), (22, 2)]:  # 0: the default level, 2
        tasks.append(asyncio.create_task(batcher.submit(x(value), 1, priority=priority)))
        await queued(batcher, len(tasks))
    gate.opened.set()
    answers = await asyncio.gather(blocker, *tasks)
    await batcher.close()
    assert gate.ran == [0, 1, 2, 22, 3]  # level 1, then level 2 in arrival order, then level 3
    for (value, _), (outputs, _) in zip([(0, 0), (3, 3), (2, 0), (1, 1), (22, 2)], answers):
        np.testing.assert_array_equal(outputs["Y"], [[value * 2]])


async def test_a_batch_is_formed_in_priority_order():
    batcher, gate, blocker = await started(BatchPolicy(max_batch_size=4, priority_levels=2,
                                                       default_priority_level=2))
    low = asyncio.create_task(batcher.submit(x(2), 1, priority=2))
    await queued(batcher, 1)
    high = asyncio.create_task(batcher.submit(x(1), 1, priority=1))
    await queued(batcher, 2)
    gate.opened.set()
    await asyncio.gather(blocker, low, high)
    await batcher.close()
    assert gate.ran == [0, 1]  # one merged batch, the high-priority row first


async def test_a_request_past_its_timeout_is_rejected_while_queued():
    policy = BatchPolicy(max_batch_size=0, allow_timeout_override=True)
    batcher, gate, blocker = await started(policy)
    patient = asyncio.create_task(batcher.submit(x(1), 1))
    hasty = asyncio.create_task(batcher.submit(x(2), 1, timeout_us=1000))
    with pytest.raises(QueueTimeout) as info:
        await hasty  # while the instance is still held: rejected when its timeout passes
    assert info.value.status == 503 and info.value.grpc_status == "UNAVAILABLE"
    assert "timeout expired" in info.value.message and "1000 us" in info.value.message
    assert batcher.pending == 1
    gate.opened.set()
    await asyncio.gather(blocker, patient)
    await batcher.close()
    assert gate.ran == [0, 1]  # the rejected request never ran


async def test_without_override_the_request_timeout_is_ignored_for_the_policy_default():
    # Level 1 rejects after its default 1 ms; level 2 has no timeout and allows no override.
    policy = BatchPolicy(max_batch_size=0, priority_levels=2, default_priority_level=2,
                         level_policies={1: QueuePolicy(timeout_us=1000)})
    batcher, gate, blocker = await started(policy)
    ignored = asyncio.create_task(batcher.submit(x(2), 1, priority=2, timeout_us=1))
    bounded = asyncio.create_task(batcher.submit(x(1), 1, priority=1, timeout_us=10**12))
    with pytest.raises(QueueTimeout):
        await bounded  # the default 1 ms, not the request's own 11 days
    # Timers fire in deadline order: had its 1 us counted, the other would be gone already.
    assert batcher.pending == 1 and not ignored.done()
    gate.opened.set()
    await asyncio.gather(blocker, ignored)
    await batcher.close()
    assert gate.ran == [0, 2]


async def test_delay_keeps_a_timed_out_request_and_serves_it_after_the_others():
    policy = BatchPolicy(max_batch_size=0, delay_on_timeout=True, allow_timeout_override=True)
    batcher, gate, blocker = await started(policy)
    late = asyncio.create_task(batcher.submit(x(1), 1, timeout_us=1))
    await queued(batcher, 1)
    on_time = asyncio.create_task(batcher.submit(x(2), 1))
    await until(lambda: batcher.delayed == 1)
    gate.opened.set()
    answers = await asyncio.gather(blocker, late, on_time)
    await batcher.close()
    assert gate.ran == [0, 2, 1]  # queued first, but past its timeout: after the others
    np.testing.assert_array_equal(answers[1][0]["Y"], [[2]])


async def test_each_level_has_its_own_queue_size():
    policy = BatchPolicy(max_batch_size=0, priority_levels=2, default_priority_level=2,
                         level_policies={2: QueuePolicy(max_queue_size=1)})
    batcher, gate, blocker = await started(policy)
    low = asyncio.create_task(batcher.submit(x(2), 1, priority=2))
    await queued(batcher, 1)
    with pytest.raises(QueueFull) as info:
        await batcher.submit(x(3), 1)  # the default level, 2, is full
    assert info.value.status == 429 and "priority level 2" in info.value.message
    high = asyncio.create_task(batcher.submit(x(1), 1, priority=1))
    await queued(batcher, 2)
    gate.opened.set()
    await asyncio.gather(blocker, low, high)
    await batcher.close()
    assert gate.ran == [0, 1, 2]


async def test_a_cancelled_request_leaves_the_queue_and_never_runs():
    batcher, gate, blocker = await started(BatchPolicy(max_batch_size=4))
    gone = asyncio.create_task(batcher.submit(x(7), 1))
    await queued(batcher, 1)
    gone.cancel()  # what aiohttp (handler_cancellation) and grpc.aio do when the client goes away
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert batcher.pending == 0
    gate.opened.set()
    await blocker
    await batcher.submit(x(5), 1)
    await batcher.close()
    assert gate.ran == [0, 5]


async def test_a_request_cancelled_after_its_batch_was_formed_does_not_run():
    gate = Gate()
    batcher = Batcher(gate.run, BatchPolicy(max_batch_size=0), concurrency=2, stats=VersionStats(), name="t")
    batcher.start()
    first = asyncio.create_task(batcher.submit(x(1), 1))
    gone = asyncio.create_task(batcher.submit(x(7), 1))
    # Both queue before the scheduler's next step, which forms both batches at once; the
    # first batch's run cancels the second's caller before that batch starts.
    gate.on_run = gone.cancel
    with pytest.raises(asyncio.CancelledError):
        await gone
    gate.opened.set()
    await first
    await batcher.close()
    assert gate.ran == [1]


@pytest.mark.parametrize("parameters", [{"priority": -1}, {"priority": 1.0}, {"priority": "1"},
                                        {"priority": True}, {"timeout": -5}, {"timeout": 1.5},
                                        {"timeout": "100"}, {"timeout": None}])
def test_malformed_priority_or_timeout_is_a_bad_request(parameters):
    name = next(iter(parameters))
    with pytest.raises(BadRequest, match=f"'{name}' must be a non-negative integer"):
        Schedule.of(parameters)


def test_a_priority_above_the_levels_is_a_bad_request():
    policy = BatchPolicy(max_batch_size=0, priority_levels=2, default_priority_level=1)
    assert [policy.level_of(p) for p in (0, 1, 2)] == [1, 1, 2]
    with pytest.raises(BadRequest, match="priority 3 is out of range.*1 \\(highest\\) to 2"):
        policy.level_of(3)
    assert BatchPolicy(max_batch_size=0).level_of(9) == 0  # no levels: one queue, as in Triton


# ------------------------------------------------------------------------ config
def ranked_config(name: str = RANKED, **queue):
    """The mlp, one row per batch, two priority levels (2 the default); level 1 rejects at
    its default timeout, the default policy lets a request set its own."""
    config = models.mlp_config(name, max_batch_size=1)
    db = config.dynamic_batching
    db.priority_levels, db.default_priority_level = 2, 2
    db.default_queue_policy.allow_timeout_override = True
    for key, value in queue.items():
        setattr(db.default_queue_policy, key, value)
    return config


def test_policy_from_config():
    config = ranked_config(timeout_action=mc.ModelQueuePolicy.DELAY, default_timeout_microseconds=500,
                           max_queue_size=7)
    level1 = config.dynamic_batching.priority_queue_policy[1]
    level1.default_timeout_microseconds = 100  # max_queue_size 0: the gateway's bound
    policy = BatchPolicy.from_config(config, default_max_queue_size=64)
    assert (policy.priority_levels, policy.default_priority_level) == (2, 2)
    assert policy.queue_policy(2) == QueuePolicy(max_queue_size=7, timeout_us=500, delay=True,
                                                 allow_timeout_override=True)
    assert policy.queue_policy(1) == QueuePolicy(max_queue_size=64, timeout_us=100)
    assert policy.queue_policy(1).timeout_for(50) == 100  # no override at level 1
    assert policy.queue_policy(2).timeout_for(50) == 50 and policy.queue_policy(2).timeout_for(900) == 500


@pytest.mark.parametrize("broken, message", [
    (lambda db: setattr(db, "default_priority_level", 0), "default_priority_level 0 must be in"),
    (lambda db: db.priority_queue_policy[3].CopyFrom(mc.ModelQueuePolicy()), r"levels \[3\] must be in"),
])
def test_a_config_triton_would_refuse_fails_to_load(broken, message):
    config = ranked_config()
    broken(config.dynamic_batching)
    with pytest.raises(LoadError, match=message):
        BatchPolicy.from_config(config, default_max_queue_size=64)


# ------------------------------------------------------------------ over HTTP
class RuntimeGate:
    """Holds a loaded version's real runtime until opened, recording the first input value
    of each batch it ran, in call order (created and used on the server's loop)."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.ran: list[float] = []
        self.opened = asyncio.Event()
        predict = runtime.predict

        async def held(inputs, outputs):
            self.ran.append(float(inputs["X"].flat[0]))
            await self.opened.wait()
            return await predict(inputs, outputs)

        runtime.predict = held

    def remove(self) -> None:
        self.opened.set()
        del self.runtime.predict


@pytest.fixture(scope="module")
def ranked_gateway(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranked")
    repo = Repository(root)
    models.publish(repo, RANKED, models.mlp_fp32(), ranked_config())
    settings = make_settings(root, runtime={"provider": "cpu", "intra_op_threads": 1, "instance_count": 1})
    with serve(settings) as server:
        yield server


@pytest.fixture
def held(ranked_gateway):
    """The ranked model's only instance, held busy by a first request (value 0)."""
    server = ranked_gateway
    served = server.call(lambda: server.registry.route(RANKED))
    gate = server.call(lambda: RuntimeGate(served.runtime))
    pool = ThreadPoolExecutor(4)
    blocker = pool.submit(infer, server, 0)
    wait_for(lambda: server.call(lambda: len(gate.ran)) == 1, what="the instance busy")
    pending = lambda: server.call(lambda: served.batcher.pending)  # noqa: E731
    try:
        yield server, gate, pool, pending
        server.call(gate.opened.set)
        blocker.result(60)
    finally:
        server.call(gate.remove)
        pool.shutdown()


def infer(server, value: float, **kwargs):
    tensor = triton.InferInput("X", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.full((1, 4), value, np.float32))
    return server.client().infer(RANKED, [tensor], **kwargs).as_numpy("SUM")


def test_http_higher_priority_first(held):
    server, gate, pool, pending = held
    low = pool.submit(infer, server, 2, priority=2)
    wait_for(lambda: pending() == 1, what="low queued")
    high = pool.submit(infer, server, 1, priority=1)
    wait_for(lambda: pending() == 2, what="high queued")
    server.call(gate.opened.set)
    np.testing.assert_array_equal(high.result(60), np.full((1, 4), 2, np.float32))  # SUM = X + 1
    np.testing.assert_array_equal(low.result(60), np.full((1, 4), 3, np.float32))
    assert server.call(lambda: list(gate.ran)) == [0, 1, 2]


def test_http_queue_timeout_is_503(held):
    server, gate, pool, pending = held
    with pytest.raises(InferenceServerException) as info:
        infer(server, 3, timeout=1000)  # 1 ms, while the only instance is held
    assert info.value.status() == "503" and "timeout expired" in info.value.message()
    assert server.call(lambda: list(gate.ran)) == [0]


def test_http_client_disconnect_cancels_its_queued_request(held):
    server, gate, pool, pending = held
    body = json.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32",
                                   "data": [7, 7, 7, 7]}]}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.sendall(b"POST /v2/models/ranked/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_for(lambda: pending() == 1, what="queued")
    wait_for(lambda: pending() == 0, what="the disconnected request to leave the queue")
    server.call(gate.opened.set)
    infer(server, 5)
    assert server.call(lambda: list(gate.ran)) == [0, 5]  # 7 never ran


@pytest.mark.parametrize("parameters, message", [
    ({"priority": 3}, "priority 3 is out of range"),
    ({"priority": -1}, "'priority' must be a non-negative integer"),
    ({"timeout": -5}, "'timeout' must be a non-negative integer"),
    ({"timeout": 2.5}, "'timeout' must be a non-negative integer"),
    ({"priority": "high"}, "'priority' must be a non-negative integer"),
])
def test_http_bad_priority_or_timeout_is_400(ranked_gateway, parameters, message):
    doc = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}],
           "parameters": parameters}
    status, answer = ranked_gateway.json("POST", f"/v2/models/{RANKED}/infer", doc)
    assert status == 400 and message in answer["error"]


def test_http_tritonclient_priority_out_of_range_is_400(ranked_gateway):
    with pytest.raises(InferenceServerException) as info:
        infer(ranked_gateway, 1, priority=3)
    assert info.value.status() == "400" and "priority levels 1 (highest) to 2" in info.value.message()


def test_schedule_policy_is_advertised(ranked_gateway):
    assert "schedule_policy" in ranked_gateway.client().get_server_metadata()["extensions"]
