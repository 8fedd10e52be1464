"""``tunegate convert --reference-data``: the manifest records the drift reference."""

from __future__ import annotations

import numpy as np

from model_repo import Repository
from model_repo.drift import InputSummary, compare

from .test_cli import convert


def test_reference_data_becomes_the_manifests_input_summary(tmp_path):
    from converters import examples

    source = tmp_path / "mlp.h5"
    examples.basic_mlp().save(source)
    reference = np.random.default_rng(0).normal(size=(500, 100)).astype(np.float32)
    np.savez(tmp_path / "train.npz", features=reference)
    result = convert(source, "--repo", tmp_path / "repo", "--name", "mlp", "--reference-data",
                     tmp_path / "train.npz", "--quiet")
    assert result.returncode == 0, result.stderr
    manifest = Repository(tmp_path / "repo").read_manifest("mlp", 1)
    summary = InputSummary.from_dict(manifest.extra["input_summary"])
    assert summary.rows == 500 and summary.width == 100 and summary.features == 32  # projected
    assert compare(summary, summary.bin(reference)).psi.max() < 1e-9


def test_unreadable_reference_data_fails_before_tensorflow(tmp_path):
    (tmp_path / "m.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    (tmp_path / "bad.npz").write_text("not a zip")
    result = convert(tmp_path / "m.h5", "--repo", tmp_path / "repo", "--name", "m", "--reference-data",
                     tmp_path / "bad.npz")
    assert result.returncode == 2 and "--reference-data" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "repo").exists()
