from __future__ import annotations

from pathlib import Path

import pytest

from model_repo import Repository, TensorSpec, make_config


def tiny_config(name: str):
    return make_config(name, [TensorSpec("x", "FP32", (4,))], [TensorSpec("y", "FP32", (4,))], max_batch_size=8)


def publish_bytes(repo: Repository, name: str, payload: bytes, **fields):
    """Publish a version whose model.onnx is ``payload`` (the repository does not parse it)."""
    with repo.staging(name) as staged:
        (staged / "model.onnx").write_bytes(payload)
        (staged / "source").mkdir()
        (staged / "source" / "weights.bin").write_bytes(payload[::-1])
        return repo.publish(name, staged, config=tiny_config(name), **fields)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository(tmp_path / "repo")
