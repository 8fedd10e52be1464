"""gRPC requests and the server's lifetime: a client's cancel or deadline takes its request
out of the queue before it runs, the health service follows readiness, and a stop lets
queued requests finish."""

from __future__ import annotations

import queue
import threading

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from model_repo import Repository

from . import models
from .conftest import wait_for
from .grpc_fixture import both_settings, serve_both

# A request to "slow" waits a minute for company: it is still queued whenever the test acts.
SLOW_DELAY_US = 60_000_000


@pytest.fixture()
def both(tmp_path):
    repo = Repository(tmp_path / "repo")
    models.publish(repo, "mlp", models.mlp_fp32(), models.mlp_config("mlp"))
    models.publish(repo, "slow", models.mlp_fp32(), models.mlp_config("slow", delay_us=SLOW_DELAY_US))
    with serve_both(both_settings(repo.root)) as server:
        yield server


def _x() -> list:
    tensor = grpcclient.InferInput("X", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
    return [tensor]


def _slow(both):
    return both.call(lambda: both.gateway.registry.route("slow"))


def _stats(both) -> dict:
    with both.grpc() as client:
        return client.get_inference_statistics("slow", as_json=True)["model_stats"][0]


def test_a_cancelled_call_leaves_the_queue_and_never_runs(both):
    served = _slow(both)
    answers: queue.Queue = queue.Queue()
    with both.grpc() as client:
        call = client.async_infer("slow", _x(), callback=lambda result, error: answers.put((result, error)))
        wait_for(lambda: both.call(lambda: served.batcher.pending) == 1, what="the request queued")
        call.cancel()
        result, error = answers.get(timeout=60)
    assert result is None and "CANCELLED" in str(error.status())
    # The handler was cancelled (not left waiting for an answer nobody reads): its request
    # is out of the queue and counted as failed, and the model never ran it.
    wait_for(lambda: both.call(lambda: served.batcher.pending) == 0, what="the request dropped")
    wait_for(lambda: _stats(both)["inference_stats"]["fail"].get("count") == "1", what="failure counted")
    assert "execution_count" not in _stats(both)  # protobuf's JSON leaves out a 0


def test_a_deadline_cancels_the_queued_request(both):
    served = _slow(both)
    errors: list[BaseException] = []

    def infer():
        with both.grpc() as client:
            try:
                client.infer("slow", _x(), client_timeout=3)
            except InferenceServerException as exc:
                errors.append(exc)

    thread = threading.Thread(target=infer)
    thread.start()
    wait_for(lambda: both.call(lambda: served.batcher.pending) == 1, what="the request queued")
    thread.join(60)
    assert len(errors) == 1 and "DEADLINE_EXCEEDED" in str(errors[0].status())
    wait_for(lambda: both.call(lambda: served.batcher.pending) == 0, what="the request dropped")
    assert "execution_count" not in _stats(both)


def test_health_service_follows_readiness(both):
    with grpc.insecure_channel(both.grpc_url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
                health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        both.call(lambda: both.gateway.begin_shutdown())  # not ready from now on
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_a_stop_lets_a_queued_request_finish(tmp_path):
    repo = Repository(tmp_path / "repo")
    models.publish(repo, "slow", models.mlp_fp32(), models.mlp_config("slow", delay_us=SLOW_DELAY_US))
    answers: queue.Queue = queue.Queue()
    with serve_both(both_settings(repo.root)) as both:
        served = _slow(both)
        client = both.grpc()
        client.async_infer("slow", _x(), callback=lambda result, error: answers.put((result, error)))
        wait_for(lambda: both.call(lambda: served.batcher.pending) == 1, what="the request queued")
    # Leaving serve_both stopped the server: the queue was flushed rather than abandoned.
    result, error = answers.get(timeout=60)
    client.close()
    assert error is None and result.as_numpy("SUM").tolist() == [[2.0] * 4]
