"""The trainer under real ``horovodrun -np 2 -H localhost:2 --gloo`` on scikit-learn digits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from model_repo import Repository

from .conftest import ROOT, env, finetune, finetune_command, versions

pytestmark = pytest.mark.usefixtures("needs_horovod")

NP2 = ("--np", "2", "--hosts", "localhost:2")


def _assert_trained(summary: dict) -> None:
    checksums = summary["weights_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1], checksums  # replicas identical
    losses = [h["loss"] for h in summary["history"]]
    assert losses[-1] < losses[0], losses
    assert summary["after"]["loss"] < summary["before"]["loss"]
    assert summary["world_size"] == 2


def _no_leftovers(repo: Path) -> None:
    leftovers = [p.name for p in (repo / "digits").iterdir() if p.name.startswith((".staging", ".removing"))]
    assert leftovers == []


def test_allreduce_run_publishes_the_next_version_with_lineage_and_onnx_parity(repo, digits_npz, digits):
    rc, outcome, output = finetune(repo, "--model", "digits", "--data", str(digits_npz), "--epochs", "3", *NP2)
    assert rc == 0, output
    assert outcome["status"] == "published" and outcome["version"] == 2
    assert versions(repo) == [1, 2]
    summary = outcome["summary"]
    _assert_trained(summary)
    assert "epoch 3/3" in output  # progress from rank 0

    r = Repository(repo)
    manifest = r.verify("digits", 2)  # every file, the curve and metrics included, matches its digest
    assert manifest.parent_version == 1
    assert manifest.data_digest == summary["data_digest"]
    assert manifest.metrics["before"] == summary["before"] and manifest.metrics["after"] == summary["after"]
    assert manifest.metrics["gate"]["passed"] is True
    training = manifest.extra["training"]
    assert training["world_size"] == 2 and training["mode"] == "allreduce"
    assert training["hyperparameters"]["lr_scaled_to"] == pytest.approx(2e-3)
    version_dir = r.version_dir("digits", 2)
    assert (version_dir / training["files"]["curve"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((version_dir / training["files"]["metrics"]).read_text())["history"] == summary["history"]

    # The published ONNX answers like the fine-tuned Keras model, which is the one trained.
    import keras
    import onnxruntime as ort

    from trainer.distributed import weights_checksum

    tuned = keras.models.load_model(version_dir / manifest.source["path"], compile=False)
    assert weights_checksum(tuned) == summary["weights_checksums"][0]
    session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    x = digits[0][:200]
    onnx_out = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(onnx_out, tuned.predict(x, verbose=0), atol=1e-4, rtol=1e-3)


def test_average_mode_every_5_steps_trains_with_identical_replicas(repo, digits_npz):
    rc, outcome, output = finetune(repo, "--model", "digits", "--data", str(digits_npz), "--epochs", "3",
                                   "--mode", "average", "--average-every", "5", "--average-optimizer-state", *NP2)
    assert rc == 0, output
    _assert_trained(outcome["summary"])
    assert Repository(repo).read_manifest("digits", 2).extra["training"]["hyperparameters"]["average_every"] == 5


def test_fp16_compression_trains(repo, digits_npz):
    rc, outcome, output = finetune(repo, "--model", "digits", "--data", str(digits_npz), "--epochs", "3",
                                   "--compression", "fp16", *NP2)
    assert rc == 0, output
    _assert_trained(outcome["summary"])


def test_a_huge_learning_rate_fails_the_gate_and_publishes_nothing(repo, digits_npz):
    rc, outcome, output = finetune(repo, "--model", "digits", "--data", str(digits_npz), "--epochs", "2",
                                   "--optimizer", "sgd", "--lr", "200", *NP2)
    assert rc == 3, output  # EXIT_NOT_PROMOTED
    assert outcome["status"] == "not_promoted" and outcome["error"] == "NotPromoted"
    assert "gate failed" in outcome["message"] and "nothing was published" in outcome["message"]
    assert outcome["summary"]["gate"]["passed"] is False
    assert versions(repo) == [1]
    _no_leftovers(repo)


def test_a_stricter_gate_on_accuracy_is_honoured(repo, digits_npz):
    rc, outcome, output = finetune(repo, "--model", "digits", "--data", str(digits_npz), "--epochs", "2",
                                   "--gate", "accuracy:+0.9", "--checkpoint-dir", str(repo.parent / "ck"), *NP2)
    assert rc == 3, output
    assert outcome["summary"]["gate"]["metric"] == "accuracy"
    assert versions(repo) == [1]

    # The failed run left its last checkpoint; --resume continues it to 4 epochs.
    rc, outcome, output = finetune(repo, "--model", "digits", "--data", str(digits_npz), "--epochs", "4",
                                   "--checkpoint-dir", str(repo.parent / "ck"), "--resume", *NP2)
    assert rc == 0, output
    assert "resuming after epoch 2" in output
    assert [h["epoch"] for h in outcome["summary"]["history"]] == [1, 2, 3, 4]
    assert not (repo.parent / "ck" / "checkpoint.npz").exists()  # consumed by the publish


def _rank_pid(marker: str, rank: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"trainer.job" in cmdline and marker.encode() in cmdline and f"HOROVOD_RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def test_sigkill_of_one_rank_fails_the_job_and_publishes_nothing(repo, digits_npz):
    cmd = finetune_command(repo, "--model", "digits", "--data", str(digits_npz), "--epochs", "500", *NP2)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(), cwd=ROOT)
    killed = False
    output = []
    try:
        for line in proc.stdout:
            output.append(line)
            if "epoch 2/500" in line and not killed:
                pid = _rank_pid(str(repo), 1)
                assert pid is not None, "rank 1 not found"
                os.kill(pid, signal.SIGKILL)
                killed = True
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(output)
    assert killed, text
    assert rc not in (0, 3), text
    assert "nothing was published" in text
    assert versions(repo) == [1]
    _no_leftovers(repo)
    time.sleep(0.5)
    assert _rank_pid(str(repo), 0) is None  # rank 0 did not linger


def test_elastic_run_trains_and_publishes(repo, digits_npz):
    rc, outcome, output = finetune(repo, "--model", "digits", "--data", str(digits_npz), "--epochs", "2",
                                   "--elastic", "--min-np", "1", "--max-np", "2", "--commit-every", "5", *NP2)
    assert rc == 0, output
    _assert_trained(outcome["summary"])
    assert Repository(repo).read_manifest("digits", 2).extra["training"]["hyperparameters"]["elastic"] is True


def test_labels_that_do_not_fit_the_model_are_refused_by_every_rank(repo, tmp_path, digits):
    bad = tmp_path / "onehot3.npz"
    np.savez(bad, x=digits[0], y=np.eye(3, dtype=np.float32)[digits[1] % 3])
    rc, outcome, output = finetune(repo, "--model", "digits", "--data", str(bad), *NP2)
    assert rc == 2, output
    assert outcome["error"] == "DataError"
    assert "do not fit the model output (10,)" in outcome["message"]
    assert versions(repo) == [1]
