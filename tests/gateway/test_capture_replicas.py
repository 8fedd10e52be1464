"""Capture across replicas (issue 14): a request captured by one gateway process is labelled
through any other over the same repository, once across every process and restart; each
process writes its own segments, and the disk is bounded across them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton

from gateway.core.errors import Conflict
from gateway.loop import capture_log
from gateway.loop.capture import CAPTURE_DIR, Captured, CaptureStore
from gateway.loop.leadership import process_identity
from model_repo import Repository
from model_repo.feedback import FeedbackWriter, feedback_dir, read_feedback

from . import loop_models
from .conftest import API_KEY, make_settings, serve, wait_for

KEY = {"X-API-Key": API_KEY}


@pytest.fixture()
def repo(tmp_path) -> Repository:
    repo = Repository(tmp_path / "repo")
    loop_models.publish(repo, "clf", loop_models.classifier())
    return repo


def _gateway(repo: Repository):
    return serve(make_settings(repo.root, api_key=API_KEY, loop={"capture": True}))


def _infer(server, request_id: str, x: np.ndarray) -> None:
    tensor = triton.InferInput("X", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    server.client().infer("clf", [tensor], request_id=request_id)


def _label(server, request_id: str, labels: list[int]) -> tuple[int, dict]:
    doc = {"parameters": {"request_id": request_id},
           "inputs": [{"name": "label", "datatype": "INT64", "shape": [len(labels)], "data": labels}]}
    return server.json("POST", "/v2/models/clf/feedback", doc, KEY)


def _wait_captured(server, request_id: str, rows: int) -> None:
    # Captured on a worker thread: a label of the wrong length names the capture once it is there.
    wait_for(lambda: f"has {rows}" in _label(server, request_id, [0] * (rows + 1))[1]["error"],
             what=f"the capture of {request_id}")


def _stored(repo: Repository):
    return read_feedback(feedback_dir(repo.root, "clf"))


def test_captured_on_one_process_labelled_through_another_once_even_after_a_restart(repo):
    x1, x2 = np.eye(2, 4, dtype=np.float32) * 7, np.full((1, 4), 3, np.float32)
    with _gateway(repo) as b:
        with _gateway(repo) as a:
            _infer(a, "x1", x1)
            _infer(a, "x2", x2)
            _wait_captured(b, "x1", 2)  # B finds A's capture in A's segments
            status, body = _label(b, "x1", [0, 1])
            assert status == 200 and body == {"model_name": "clf", "samples": 2, "answered_by_version": "1"}
            for server in (a, b):  # labelled once, through either
                status, body = _label(server, "x1", [0, 1])
                assert status == 409 and "'x1' of model 'clf' is already labelled" in body["error"], body
            dirs = {p.name for p in capture_log.instance_dirs(repo.model_dir("clf") / CAPTURE_DIR)}
            assert len(dirs) == 1  # only A captured; each process writes its own directory
        # A restarted (a new incarnation) reads its old segments back but cannot relabel.
        with _gateway(repo) as a2:
            status, body = _label(a2, "x1", [1, 1])
            assert status == 409, body
            status, body = _label(a2, "x2", [2])
            assert status == 200 and body["answered_by_version"] == "1"
        assert _label(b, "x2", [2])[0] == 409
        assert _label(b, "nobody-sent-this", [2])[0] == 400
    stored = _stored(repo)
    assert stored.labels.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(stored.inputs["X"], np.concatenate([x1, x2]))


def test_a_label_that_fails_to_store_releases_its_claim_for_a_retry(repo, monkeypatch):
    with _gateway(repo) as b, _gateway(repo) as a:
        _infer(a, "f1", np.ones((1, 4), np.float32))
        _wait_captured(b, "f1", 1)
        real_append = FeedbackWriter.append

        def full_disk(self, *args, **kwargs):  # injects the failure only
            monkeypatch.setattr(FeedbackWriter, "append", real_append)
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(FeedbackWriter, "append", full_disk)
        status, _ = _label(b, "f1", [1])
        assert status == 500
        status, body = _label(a, "f1", [1])  # the claim was released: the retry stores it
        assert status == 200, body
        assert _label(b, "f1", [1])[0] == 409
    assert _stored(repo).labels.tolist() == [1]


def _item(value: float) -> Captured:
    inputs = {"X": np.full((1, 4), value, np.float32)}
    return Captured(1, inputs, None, 16)


def test_segments_per_instance_are_bounded_and_read_incrementally_by_the_others(tmp_path):
    root = tmp_path / "clf" / CAPTURE_DIR
    a = CaptureStore(root, instance="host-1-aaaa", max_requests=4, max_bytes=1 << 20)
    b = CaptureStore(root, instance="host-2-bbbb", max_requests=4, max_bytes=1 << 20)
    for i in range(10):
        a.put([f"r{i}"], _item(i))
    # Rotation at half the budget, two segments kept: the oldest captures left disk and memory.
    assert len(capture_log.segments(a.own)) == 2 and len(a._items) <= 4
    assert a.find("r0") is None and b.find("r0") is None
    assert b.find("r9").item.inputs["X"][0, 0] == 9
    assert not capture_log.segments(b.own)  # B only read
    a.put(["r10"], _item(10))  # appended since B's last look: found by reading only that
    segment = capture_log.segments(a.own)[-1]
    assert b.find("r10").segment == segment and b._index._next[segment] == segment.stat().st_size
    a.close()
    b.close()


def test_a_dead_instances_directory_is_removed_once_stale_with_its_claims(tmp_path):
    root = tmp_path / "clf" / CAPTURE_DIR
    dead = CaptureStore(root, instance="dead-1-0000", max_requests=10, max_bytes=1 << 20)
    live = CaptureStore(root, instance="live-2-0000", max_requests=10, max_bytes=1 << 20)
    dead.put(["d1"], _item(1))
    live.put(["l1"], _item(2))
    found = live.find("d1")
    live.claim("d1", found)
    dead.close()
    hour_ago = time.time() - 3600
    for path in [dead.own, *dead.own.iterdir()]:
        os.utime(path, (hour_ago, hour_ago))
    newcomer = CaptureStore(root, instance="new-3-0000", max_requests=10, max_bytes=1 << 20, stale_after=600)
    newcomer.put(["n1"], _item(3))  # its first segment tidies the others' stale directories
    assert not dead.own.exists() and live.own.exists()
    assert newcomer.find("d1") is None and newcomer.find("l1") is not None
    live.close()
    newcomer.close()


_CLAIM = "import sys; from pathlib import Path; from gateway.loop import capture_log; " \
         "print(capture_log.claim(Path(sys.argv[1]), 'c1'))"


def test_a_claim_is_won_by_exactly_one_of_several_processes(tmp_path):
    store = CaptureStore(tmp_path / CAPTURE_DIR, instance="a-1-0000", max_requests=10, max_bytes=1 << 20)
    store.put(["c1"], _item(1))
    segment = store.find("c1").segment
    claimers = [subprocess.Popen([sys.executable, "-c", _CLAIM, str(segment)], stdout=subprocess.PIPE, text=True)
                for _ in range(4)]
    won = [c.communicate(timeout=60)[0].strip() for c in claimers]
    assert sorted(won) == ["False"] * 3 + ["True"]
    with pytest.raises(Conflict, match="already labelled"):  # this process, too, sees the winner's claim
        store.claim("c1", store.find("c1"))
    store.close()


def test_instance_ids_name_a_directory():
    assert capture_log.check_instance(process_identity())
    for bad in ("", "../x", "a/b", "seg-00000001.labelled", "x" * 200):
        with pytest.raises(ValueError):
            CaptureStore(Path("/tmp"), instance=bad, max_requests=1, max_bytes=1)


def test_segments_written_before_instance_directories_are_still_labelled_once(tmp_path):
    root = tmp_path / "clf" / CAPTURE_DIR
    root.mkdir(parents=True)
    (root / "seg-00000001.cap").write_bytes(capture_log.encode("old1", _item(5)))  # the former layout
    store = CaptureStore(root, instance="up-1-0000", max_requests=10, max_bytes=1 << 20)
    found = store.find("old1")
    assert found.item.inputs["X"][0, 0] == 5
    store.claim("old1", found)
    with pytest.raises(Conflict):
        store.check_unlabelled("old1", store.find("old1"))
    store.close()
