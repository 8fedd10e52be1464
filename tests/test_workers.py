"""``tunegate serve --workers 2``: two real serving processes on one pair of ports
(SO_REUSEPORT). Both answer, bit-exact; /metrics on either sums both; a new version
published to the repository reaches both; one of them leads the loop."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from model_repo import Repository
from model_repo.triton import free_port
from tests.gateway import models
from tests.gateway.conftest import wait_for

X = np.arange(8, dtype=np.float32).reshape(2, 4) / 7


def _expected(onnx: bytes) -> np.ndarray:
    return ort.InferenceSession(onnx, providers=["CPUExecutionProvider"]).run(["OUT"], {"X": X})[0]


def _get(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # a new connection each time
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


def _infer(port: int) -> tuple[str, np.ndarray]:
    doc = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 4], "data": X.ravel().tolist()}],
           "outputs": [{"name": "OUT"}]}
    status, body = _get(port, "POST", "/v2/models/mlp/infer", json.dumps(doc).encode())
    assert status == 200, body
    answer = json.loads(body)
    out = answer["outputs"][0]
    return answer["model_version"], np.asarray(out["data"], np.float32).reshape(out["shape"])


def _metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


@pytest.fixture
def two_workers(tmp_path):
    root = tmp_path / "repo"
    repo = Repository(root)
    models.publish(repo, "mlp", models.mlp_fp32(seed=0), models.mlp_config("mlp"))
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps({"poll_interval_seconds": 0.2, "leader": {"poll_seconds": 0.2},
                                  "runtime": {"provider": "cpu", "intra_op_threads": 1}}))
    port, grpc_port = free_port(), free_port()
    server = subprocess.Popen([sys.executable, "-m", "tunegate_cli", "serve", "--repo", str(root), "--port", str(port),
                               "--grpc-port", str(grpc_port), "--workers", "2", "--config", str(config)],
                              stderr=subprocess.PIPE, text=True)
    threading.Thread(target=server.stderr.read, daemon=True).start()  # a full pipe would block logging
    try:
        # Ready on every worker: new connections land on either, so ask until all say so.
        wait_for(lambda: all(_get(port, "GET", "/v2/health/ready")[0] == 200 for _ in range(10)),
                 what="both workers ready", timeout=120)
        yield repo, port, grpc_port, server
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
        assert server.returncode == 0


def test_two_workers_share_the_ports_answer_alike_and_sum_their_metrics(two_workers):
    repo, port, grpc_port, server = two_workers
    # Each worker says who it is: new connections reach both.
    identities = {json.loads(_get(port, "GET", "/v2/loop/leader")[1])["identity"] for _ in range(40)}
    assert len(identities) == 2, identities
    leaders = [json.loads(_get(port, "GET", "/v2/loop/leader")[1]) for _ in range(20)]
    assert len({lead["holder"] for lead in leaders}) == 1  # one leader, and both know it

    expected = _expected(models.mlp_fp32(seed=0))
    for _ in range(30):
        version, out = _infer(port)
        assert version == "1" and np.array_equal(out, expected)
    for _ in range(10):
        with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
            inp = grpcclient.InferInput("X", [2, 4], "FP32")
            inp.set_data_from_numpy(X)
            assert np.array_equal(client.infer("mlp", [inp]).as_numpy("OUT"), expected)

    # Whichever worker is scraped answers for both.
    for _ in range(6):
        text = _get(port, "GET", "/metrics")[1].decode()
        assert _metric(text, "nv_inference_request_success", '{model="mlp",version="1"}') == 40
        assert _metric(text, "tunegate_loop_leader") == 1
        assert _metric(text, "tunegate_model_info", '{execution_provider="CPUExecutionProvider",model="mlp",'
                                                    'platform="onnxruntime_onnx",version="1"}') == 1

    # Hot reload reaches both workers: every new connection gets version 2's answer.
    models.publish(repo, "mlp", models.mlp_fp32(seed=1), models.mlp_config("mlp"))
    expected2 = _expected(models.mlp_fp32(seed=1))
    wait_for(lambda: all(_infer(port)[0] == "2" for _ in range(10)), what="version 2 on both workers")
    for _ in range(20):
        version, out = _infer(port)
        assert version == "2" and np.array_equal(out, expected2)


def test_a_taken_port_is_refused_before_any_worker_starts(tmp_path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "tunegate_cli", "serve", "--repo", str(tmp_path), "--port", str(port),
                               "--grpc-port", "0", "--workers", "2"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "already in use" in done.stderr, done.stderr
    assert "worker" not in done.stderr.lower().replace("--workers", "")
