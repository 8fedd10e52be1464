"""``tunegate convert`` as a user runs it: a subprocess of the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_repo import Repository

TUNEGATE = Path(sys.executable).with_name("tunegate")
ROOT = Path(__file__).resolve().parents[2]


def convert(*args, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env_extra or {})}
    return subprocess.run([str(TUNEGATE), "convert", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory) -> Path:
    """Not there yet: the first conversion creates it (its parent exists)."""
    return tmp_path_factory.mktemp("cli") / "repo"


@pytest.fixture(scope="module")
def first_two_runs(corpus, repo_dir):
    first = convert(corpus["mlp_h5"], "--repo", repo_dir, "--name", "mlp", "--json")
    second = convert(corpus["mlp_h5"], "--repo", repo_dir, "--name", "mlp", "--json", "--fp16", "--optimize",
                     "--parent-version", "1", "--max-batch-size", "32")
    return first, second


def test_chapter_mlp_h5_publishes_version_1_then_2(first_two_runs, repo_dir):
    first, second = first_two_runs
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)  # exactly one JSON object on stdout
    assert set(result) == {"model", "version", "path", "parity"}
    assert result["model"] == "mlp" and result["version"] == 1
    assert Path(result["path"]) == repo_dir / "mlp" / "1"
    assert result["parity"]["passed"] and result["parity"]["max_abs"] <= 1e-5
    assert result["parity"]["outputs"]["probabilities"]["max_abs"] <= 1e-5

    assert second.returncode == 0, second.stderr
    result2 = json.loads(second.stdout)
    assert result2["version"] == 2
    repo = Repository(repo_dir)
    assert repo.list_versions("mlp") == [1, 2]
    manifest = repo.verify("mlp", 2)
    assert manifest.parent_version == 1
    assert manifest.source == {"format": "keras", "path": "source/model.keras"}
    # The config was written by the first publish and kept.
    assert repo.read_config("mlp").max_batch_size == 64


def test_fp16_and_optimized_variants(first_two_runs, repo_dir):
    import onnx
    import onnxruntime as ort

    version_dir = repo_dir / "mlp" / "2"
    parity = json.loads(first_two_runs[1].stdout)["parity"]
    assert parity["fp16"]["passed"] and parity["fp16"]["atol"] == 1e-3 and parity["fp16"]["rtol"] == 1e-2
    assert parity["fp16"]["top1_agreement"]["probabilities"] == 1.0
    assert parity["optimized"]["passed"]
    fp16 = onnx.load(str(version_dir / "model_fp16.onnx"))
    assert {t.data_type for t in fp16.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert (version_dir / "model_fp16.onnx").stat().st_size < 0.6 * (version_dir / "model.onnx").stat().st_size
    for name in ("model.onnx", "model_fp16.onnx", "model_optimized.onnx"):
        ort.InferenceSession(str(version_dir / name), providers=["CPUExecutionProvider"])


def test_progress_goes_to_stderr(first_two_runs):
    assert "convert mlp" in first_two_runs[0].stderr


def test_a_new_repository_is_created_and_said_so(first_two_runs, repo_dir):
    assert f"tunegate convert: created a new model repository at {repo_dir}" in first_two_runs[0].stderr
    assert "created a new model repository" not in first_two_runs[1].stderr


def test_corrupt_h5_fails_cleanly_with_no_new_version(corpus, first_two_runs, repo_dir):
    result = convert(corpus["corrupt_h5"], "--repo", repo_dir, "--name", "mlp", "--json")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "tunegate convert: error: " in result.stderr and "corrupt.h5: not a loadable Keras model" in result.stderr
    assert Repository(repo_dir).list_versions("mlp") == [1, 2]
    assert not [p for p in (repo_dir / "mlp").iterdir() if p.name.startswith(".staging")]


def test_parity_failure_publishes_nothing(corpus, first_two_runs, repo_dir):
    published_error = json.loads(first_two_runs[0].stdout)["parity"]["max_abs"]
    assert published_error > 0, "zero tolerance only fails where ONNX differs at all"
    result = convert(corpus["mlp_h5"], "--repo", repo_dir, "--name", "mlp", "--atol", "0", "--rtol", "0")
    assert result.returncode == 6
    assert "does not match the original model within atol=0, rtol=0: probabilities" in result.stderr
    assert Repository(repo_dir).list_versions("mlp") == [1, 2]


def test_missing_custom_layer_is_named_then_supplied(corpus, tmp_path):
    result = convert(corpus["custom"], "--repo", tmp_path, "--name", "custom")
    assert result.returncode == 3
    assert "custom object 'Scale'" in result.stderr and "--custom-objects MODULE:Scale" in result.stderr
    assert not (tmp_path / "custom" / "1").exists()

    result = convert(corpus["custom"], "--repo", tmp_path, "--name", "custom", "--custom-objects",
                     "tunegate_test_layers:Scale", "--json", env_extra={"PYTHONPATH": str(corpus["custom_dir"])})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == 1


def test_graphdef_through_the_cli(corpus, tmp_path):
    result = convert(corpus["graphdef"], "--repo", tmp_path, "--name", "frozen", "--json", "--quiet",
                     "--inputs", "x", "--outputs", "Identity")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["parity"]["passed"]
    assert "convert frozen" not in result.stderr  # --quiet
    assert (tmp_path / "frozen" / "1" / "source" / "model.pb").is_file()


def test_help_lists_the_exit_codes():
    result = subprocess.run([str(TUNEGATE), "convert", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "Exit status: 0 published; 2 bad arguments or source file" in result.stdout
    for code in ("3 unknown custom object", "4 an op the converter cannot handle", "5 invalid ONNX",
                 "6 parity failure", "1 other failure"):
        assert code in result.stdout.replace("\n", " ")


def _cheap(*args) -> tuple[int, list[str], set[str]]:
    """Run convert with ``-X importtime``: (exit status, stderr lines that are not import
    timings, top-level packages imported)."""
    result = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "tunegate_cli.py"), "convert",
                             *map(str, args)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    lines = result.stderr.splitlines()
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in lines if line.startswith("import time:")}
    return result.returncode, [line for line in lines if not line.startswith("import time:")], imported


@pytest.mark.parametrize("args, message", [
    (["--name", "../escape"], "--name: invalid model name '../escape'"),
    (["--name", "m", "--opset", "99"], "opset 99 is not supported; expected 13..18"),
    (["--name", "m", "--atol", "-1"], "tolerances must be >= 0"),
    (["--name", "m", "--max-batch-size", "0"], "max batch size must be >= 1"),
    (["--name", "m", "--parent-version", "0"], "--parent-version: invalid version 0"),
    (["--name", "m", "--sample", "/nonexistent/sample.npz"], "--sample /nonexistent/sample.npz: no such file"),
    (["--name", "m", "--custom-objects", "Scale"], "--custom-objects 'Scale': expected MODULE:ATTR"),
    (["--name", "m", "--format", "saved_model"], "--format saved_model expects a SavedModel directory"),
])
def test_bad_arguments_fail_in_one_line_before_tensorflow(corpus, tmp_path, args, message):
    rc, stderr, imported = _cheap(corpus["mlp_h5"], "--repo", tmp_path / "repo", *args)
    assert rc == 2
    assert len(stderr) == 1 and stderr[0].startswith("tunegate convert: error: ") and message in stderr[0]
    assert "tensorflow" not in imported and "keras" not in imported
    assert not (tmp_path / "repo").exists()


def test_missing_source_fails_before_tensorflow(tmp_path):
    rc, stderr, imported = _cheap(tmp_path / "nope.h5", "--repo", tmp_path, "--name", "m")
    assert rc == 2 and stderr == [f"tunegate convert: error: {tmp_path / 'nope.h5'}: no such file or directory"]
    assert "tensorflow" not in imported


def test_mistyped_repo_is_not_created(corpus, tmp_path):
    typo = tmp_path / "demo" / "rpeo"  # neither it nor its parent exists
    rc, stderr, imported = _cheap(corpus["mlp_h5"], "--repo", typo, "--name", "m")
    assert rc == 2
    assert stderr == [f"tunegate convert: error: --repo {typo}: no such directory, nor its parent "
                      f"{typo.parent}; check the path, or create the parent first"]
    assert "tensorflow" not in imported
    assert list(tmp_path.iterdir()) == []
