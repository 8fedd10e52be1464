"""Triton's ``model_warmup`` from config.pbtxt (zero, random or file data, a batch size, a
count) runs before a version is ready; a warm-up that fails keeps the version from serving,
with the reason in the repository index. Seen through the unmodified tritonclient."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from model_repo import Repository
from model_repo.config import WARMUP_DIR

from . import models
from .conftest import wait_for
from .grpc_fixture import both_settings, serve_both


def warm_config(name: str, source: str, *, batch_size: int = 1, count: int = 0, dims=(4,), file: str = "",
                preferred=()):
    config = models.mlp_config(name, preferred=preferred)
    warm = config.model_warmup.add(name=f"{source} sample", batch_size=batch_size, count=count)
    spec = warm.inputs["X"]
    spec.data_type = config.input[0].data_type
    spec.dims.extend(dims)
    if source == "zero":
        spec.zero_data = True
    elif source == "random":
        spec.random_data = True
    else:
        spec.input_data_file = file
    return config


def publish_with_file(repo: Repository, name: str, config, data: bytes) -> None:
    warmup_dir = repo.model_dir(name) / WARMUP_DIR
    warmup_dir.mkdir(parents=True)
    (warmup_dir / "x.bin").write_bytes(data)
    models.publish(repo, name, models.mlp_fp32(), config)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("warmup_repo")
    repo = Repository(root)
    models.publish(repo, "zeros", models.mlp_fp32(), warm_config("zeros", "zero", batch_size=4, count=3))
    models.publish(repo, "random", models.mlp_fp32(), warm_config("random", "random", batch_size=2))
    publish_with_file(repo, "from_file", warm_config("from_file", "file", count=2, file="x.bin"),
                      np.arange(4, dtype="<f4").tobytes())
    models.publish(repo, "default", models.mlp_fp32(), models.mlp_config("default", preferred=(2, 4)))
    # Warm-ups that fail: a file of the wrong size, a file that is not there, and a sample the
    # model cannot run (config.pbtxt allows any width, the graph's MatMul takes 4).
    publish_with_file(repo, "short_file", warm_config("short_file", "file", file="x.bin"), b"\0" * 12)
    models.publish(repo, "no_file", models.mlp_fp32(), warm_config("no_file", "file", file="missing.bin"))
    runs_badly = warm_config("runs_badly", "zero", dims=(3,))
    runs_badly.input[0].dims[:] = [-1]
    runs_badly.output[1].dims[:] = [-1]
    models.publish(repo, "runs_badly", models.mlp_fp32(), runs_badly)
    with serve_both(both_settings(root, strict_readiness=False)) as server:
        yield server


def warmup_runs(both, model: str) -> int:
    with contextlib.closing(both.http()) as client:
        return client.get_model_metadata(model)["parameters"]["warmup_runs"]


def test_config_warmup_runs_zero_random_and_file_data_count_times(both):
    assert warmup_runs(both, "zeros") == 3
    assert warmup_runs(both, "random") == 1  # Triton's count 0: once
    assert warmup_runs(both, "from_file") == 2


def test_without_model_warmup_the_default_runs_once_per_preferred_batch_size(both):
    assert warmup_runs(both, "default") == 2


@pytest.mark.parametrize("model, reason", [("short_file", "12 bytes of binary data, expected 16"),
                                           ("no_file", "cannot read"),
                                           ("runs_badly", "warm-up 'zero sample' failed")])
def test_a_failing_warmup_keeps_the_version_from_serving(both, model, reason):
    with contextlib.closing(both.grpc()) as client:
        entries = wait_for(lambda: [e for e in client.get_model_repository_index(as_json=True)["models"]
                                    if e["name"] == model and e.get("state") == "UNAVAILABLE"],
                           what=f"{model} unavailable")
        assert reason in entries[0]["reason"]
        assert not client.is_model_ready(model)
        inp = grpcclient.InferInput("X", [1, 4], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 4), np.float32))
        with pytest.raises(InferenceServerException):
            client.infer(model, [inp])
