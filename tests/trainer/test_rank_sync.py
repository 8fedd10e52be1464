"""Every rank trains the same model: a batch-norm model under real ``horovodrun``.

The layers' own state (BatchNormalization's moving statistics) is what allreduce alone leaves
different on each rank; these runs check it ends identical, that a divergence is refused
before anything is published, and that one rank issues no Horovod collective at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_repo import Repository

from .conftest import HOROVODRUN, ROOT, env, finetune, versions

pytestmark = pytest.mark.usefixtures("needs_horovod")

NP2 = ("--np", "2", "--hosts", "localhost:2")
# The gate is not under test here: let any finite result through so that every run publishes.
QUICK = ("--model", "bn", "--epochs", "2", "--batch-size", "64", "--gate", "loss:-100")
BN_STATS = {"batch_normalization/moving_mean", "batch_normalization/moving_variance"}


@pytest.fixture(scope="module")
def bn_repo_template(tmp_path_factory, digits) -> Path:
    """A repository serving ``bn`` version 1: digits through Dense, BatchNormalization, Dense."""
    base = tmp_path_factory.mktemp("bn")
    np.savez(base / "digits.npz", x=digits[0], y=digits[1])
    script = f"""
import numpy as np, keras
from converters import publish_keras_model
from model_repo import Repository
keras.utils.set_random_seed(0)
d = np.load({str(base / 'digits.npz')!r})
inputs = keras.Input((64,), name="x")
h = keras.layers.Dense(32)(inputs)
h = keras.layers.BatchNormalization(name="batch_normalization")(h)
h = keras.layers.Activation("relu")(h)
m = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="probs")(h))
publish_keras_model(m, Repository({str(base / 'repo')!r}), "bn", sample={{"x": d["x"][:16]}})
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, env=env(), timeout=300)
    return base


@pytest.fixture
def bn_repo(bn_repo_template, tmp_path) -> Path:
    import shutil

    shutil.copytree(bn_repo_template / "repo", tmp_path / "repo")
    return tmp_path / "repo"


def _report(repo: Path) -> dict:
    return json.loads((repo / "bn" / ".training" / "metrics.json").read_text())


def _assert_paced(summary: dict) -> None:
    """metrics.json's pace: per-epoch wall time and samples/s, time to the first step."""
    for record in summary["history"]:
        assert record["wall_s"] > 0 and record["samples_per_s"] > 0
        assert record["samples_per_s"] == pytest.approx(record["samples_per_s_slowest_rank"] * record["world_size"])
    assert summary["timing"]["time_to_first_step_s"] > 0
    assert "time_to_first_step_s" in summary["history"][0]


@pytest.mark.parametrize("compression", ["none", "fp16"])
def test_batch_norm_replicas_stay_identical_in_allreduce_mode(bn_repo, bn_repo_template, compression):
    data = str(bn_repo_template / "digits.npz")
    rc, outcome, output = finetune(bn_repo, *QUICK, "--data", data, "--compression", compression, *NP2)
    assert rc == 0, output
    summary = outcome["summary"]
    checksums = summary["weights_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1], checksums
    _assert_paced(summary)
    assert _report(bn_repo)["history"] == summary["history"]  # the report directory has it too

    # The published ONNX answers like the published Keras model, and that is the one trained.
    import keras
    import onnxruntime as ort

    from trainer.distributed import weights_checksum

    repo = Repository(bn_repo)
    manifest = repo.verify("bn", 2)
    version_dir = repo.version_dir("bn", 2)
    tuned = keras.models.load_model(version_dir / manifest.source["path"], compile=False)
    assert weights_checksum(tuned) == checksums[0]
    session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.load(data)["x"][:200]
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0],
                               tuned.predict(x, verbose=0), atol=1e-4, rtol=1e-3)


def test_replicas_that_differ_are_refused_and_nothing_is_published(bn_repo, bn_repo_template, tmp_path):
    # The job as a function inside each rank, with the epoch-end sync of the layers' state
    # switched off: the ranks' batch statistics then drift apart, as they did before it existed.
    script = tmp_path / "rank.py"
    script.write_text("import sys\nimport trainer.sync\n"
                      "trainer.sync.sync_non_trainable = lambda hvd, model: 0\n"
                      "from trainer.job import main\nsys.exit(main(sys.argv[1:]))\n")
    result_file = tmp_path / "result.json"
    cmd = [str(HOROVODRUN), *("-np", "2", "-H", "localhost:2", "--gloo"), sys.executable, str(script),
           "--repo", str(bn_repo), *QUICK, "--data", str(bn_repo_template / "digits.npz"),
           "--result-file", str(result_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=ROOT, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    result = json.loads(result_file.read_text())
    assert result["error"] == "JobFailed", result  # exit status 1 through tunegate finetune
    assert set(result["differing_variables"]) == BN_STATS, result["differing_variables"]
    assert "batch_normalization/moving_mean" in result["message"] and "nothing was published" in result["message"]
    checksums = result["weights_checksums"]
    assert len(checksums) == 2 and checksums[0] != checksums[1]
    assert versions(bn_repo, "bn") == [1]
    _assert_paced(_report(bn_repo))  # a job that publishes nothing still leaves its metrics


def test_one_rank_issues_no_horovod_collective(bn_repo, bn_repo_template, tmp_path, monkeypatch):
    from trainer.timeline import collectives

    timeline = tmp_path / "timeline.json"
    monkeypatch.setenv("HOROVOD_TIMELINE", str(timeline))
    # fp16 asked for: with nobody to exchange with, nothing is compressed either.
    rc, outcome, output = finetune(bn_repo, *QUICK, "--data", str(bn_repo_template / "digits.npz"),
                                   "--compression", "fp16", "--np", "1")
    assert rc == 0, output
    assert outcome["summary"]["world_size"] == 1
    assert timeline.is_file(), "Horovod wrote no timeline: the check below would prove nothing"
    assert collectives(timeline) == {}
    _assert_paced(outcome["summary"])
