"""A gateway SIGKILLed while feedback streams in loses no acknowledged sample."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from model_repo import Repository
from model_repo.feedback import feedback_dir, read_feedback
from model_repo.triton import free_port

from . import loop_models
from .conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_sigkill_between_acks_keeps_every_acknowledged_sample(tmp_path):
    import http.client

    repo = Repository(tmp_path / "repo")
    loop_models.publish(repo, "clf", loop_models.classifier())
    port = free_port()
    log = open(tmp_path / "gateway.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tunegate_cli", "serve", "--repo", str(repo.root),
                             "--port", str(port), "--grpc-port", "0", "--provider", "cpu"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def post(i: int) -> int:
        doc = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [float(i), 0, 0, 0]},
                          {"name": "label", "datatype": "INT64", "shape": [1], "data": [i % 3]}]}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/v2/models/clf/feedback", json.dumps(doc).encode(),
                         {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def ready() -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/v2/health/ready")
            return conn.getresponse().status == 200
        except OSError:
            return False

    acked: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        i = 0
        while not stop.is_set():
            try:
                if post(i) == 200:
                    acked.append(i)
            except OSError:
                return  # the gateway is gone
            i += 1

    try:
        wait_for(ready, what="gateway ready")
        writer = threading.Thread(target=stream, daemon=True)
        writer.start()
        wait_for(lambda: len(acked) >= 100, what="100 acknowledged samples")
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: a request is likely in flight
        proc.wait(30)
        stop.set()
        writer.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()

    # Restarted, the gateway keeps appending (to a new shard) after the torn tail.
    proc = subprocess.Popen([sys.executable, "-m", "tunegate_cli", "serve", "--repo", str(repo.root),
                             "--port", str(port), "--grpc-port", "0", "--provider", "cpu"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(ready, what="gateway ready again")
        assert post(1_000_000) == 200
    finally:
        proc.terminate()
        proc.wait(30)
    stored = read_feedback(feedback_dir(repo.root, "clf"))
    assert stored.quarantined == 0
    # The sample's number travels in X (labels are class ids 0..2 of the 3-class model).
    numbers = stored.inputs["X"][:, 0].astype(np.int64)
    assert numbers[-1] == 1_000_000
    assert len(acked) >= 100
    missing = sorted(set(acked) - set(numbers.tolist()))
    assert not missing, f"acknowledged but lost: {missing[:10]}"
    # Inputs and labels stayed paired, record by record.
    np.testing.assert_array_equal(numbers % 3, stored.labels)
