"""Triton's load with overrides through the unmodified tritonclient (HTTP and gRPC) against a
real gateway: a file override becomes a new published version (manifest, digests, bit-exact
answers of the new model), a config override becomes the model's config.pbtxt, and every
bad override is a 4xx that leaves the repository as it was."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from model_repo import config_to_dict

from . import models
from .conftest import API_KEY
from .grpc_fixture import both_settings, serve_both

KEY = {"x-api-key": API_KEY}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("override-repo")
    from model_repo import Repository

    repo = Repository(root)
    for name in ("addc", "addc_grpc", "victim"):
        models.publish(repo, name, models.add_const_fp32(1.0), models.add_const_config(name))
    models.publish(repo, "mlp", models.mlp_fp32(), models.mlp_config("mlp"))
    settings = both_settings(root, api_key=API_KEY, max_body_bytes=1 << 20)
    with serve_both(settings) as server:
        server.repo = repo
        yield server


def _config_json(name: str, **changes) -> str:
    doc = config_to_dict(models.add_const_config(name))
    doc.update(changes)
    return json.dumps(doc)


def _add(client, module, model: str, x: np.ndarray) -> np.ndarray:
    tensor = module.InferInput("X", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor]).as_numpy("Y")


def _snapshot(root: Path, model: str) -> dict[str, str]:
    """Every file of the model's directory (but the lock) with its digest."""
    base = root / model
    if not base.exists():
        return {}
    return {str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*")) if p.is_file() and p.name != ".lock"}


X = np.array([[0.5, -2.25], [3.0, 1e-3]], np.float32)


def test_file_override_over_http_publishes_a_version_that_serves(both):
    model_bytes = models.add_const_fp32(5.0)
    with both.http() as client:
        client.load_model("addc", config=_config_json("addc"), files={"file:1/model.onnx": model_bytes},
                          headers=KEY)
        assert both.repo.list_versions("addc") == [1, 2]
        manifest = both.repo.verify("addc", 2)  # every file's digest matches its manifest
        assert manifest.sha256 == hashlib.sha256(model_bytes).hexdigest()
        assert manifest.parent_version == 1
        assert manifest.extra["load_override"] == {"version_dir": "1", "files": ["model.onnx"]}
        assert client.get_model_metadata("addc")["versions"] == ["2"]
        np.testing.assert_array_equal(_add(client, httpclient, "addc", X), X + np.float32(5.0))


def test_file_override_over_grpc_takes_bytes(both):
    with both.grpc() as client:
        client.load_model("addc_grpc", config=_config_json("addc_grpc"),
                          files={"file:1/model.onnx": models.add_const_fp32(7.0)}, headers=KEY)
        assert both.repo.list_versions("addc_grpc") == [1, 2]
        np.testing.assert_array_equal(_add(client, grpcclient, "addc_grpc", X), X + np.float32(7.0))


def test_file_override_can_bring_a_new_model(both):
    with both.http() as client:
        client.load_model("fresh", config=_config_json("fresh"),
                          files={"file:3/model.onnx": models.add_const_fp32(2.0)}, headers=KEY)
        assert both.repo.list_versions("fresh") == [1]
        np.testing.assert_array_equal(_add(client, httpclient, "fresh", X), X + np.float32(2.0))


def test_config_override_takes_effect(both):
    with both.http() as client:
        doc = client.get_model_config("mlp")
        assert doc["max_batch_size"] == 16
        doc["max_batch_size"] = 4
        client.load_model("mlp", config=json.dumps(doc), headers=KEY)
        assert client.get_model_config("mlp")["max_batch_size"] == 4
        assert both.repo.read_config("mlp").max_batch_size == 4  # written to config.pbtxt
        assert both.repo.list_versions("mlp") == [1]  # no new version for a config
        big = httpclient.InferInput("X", [5, 4], "FP32")
        big.set_data_from_numpy(np.ones((5, 4), np.float32))
        with pytest.raises(InferenceServerException, match="batch size 5"):
            client.infer("mlp", [big])


def _bad(name: str, **parameters) -> dict:
    return {"parameters": {"config": _config_json(name), **parameters}}


GOOD = base64.b64encode(models.add_const_fp32(9.0)).decode()
BAD_LOADS = {
    "path escape": _bad("victim", **{"file:../mlp/1/model.onnx": GOOD}),
    "escape inside": _bad("victim", **{"file:1/../../mlp/model.onnx": GOOD, "file:1/model.onnx": GOOD}),
    "absolute path": _bad("victim", **{"file:/etc/model.onnx": GOOD}),
    "no version dir": _bad("victim", **{"file:model.onnx": GOOD}),
    "hidden part": _bad("victim", **{"file:1/model.onnx": GOOD, "file:1/.staging-x/a": GOOD}),
    "manifest": _bad("victim", **{"file:1/model.onnx": GOOD, "file:1/manifest.json": GOOD}),
    "two versions": _bad("victim", **{"file:1/model.onnx": GOOD, "file:2/model.onnx": GOOD}),
    "file over a directory": _bad("victim", **{"file:1/model.onnx": GOOD, "file:1/a": GOOD, "file:1/a/b": GOOD}),
    "name too long": _bad("victim", **{"file:1/model.onnx": GOOD, "file:1/" + "n" * 300: GOOD}),
    "no model.onnx": _bad("victim", **{"file:1/other.onnx": GOOD}),
    "bad base64": _bad("victim", **{"file:1/model.onnx": "not base64!"}),
    "not a string": _bad("victim", **{"file:1/model.onnx": 12}),
    "does not load": _bad("victim", **{"file:1/model.onnx": base64.b64encode(b"not an onnx model").decode()}),
    "config mismatch": {"parameters": {"config": _config_json("victim", input=[
        {"name": "Z", "data_type": "TYPE_FP32", "dims": [2]}]), "file:1/model.onnx": GOOD}},
    "files without config": {"parameters": {"file:1/model.onnx": GOOD}},
    "config of another model": _bad("mlp", **{"file:1/model.onnx": GOOD}),
    "config not JSON": {"parameters": {"config": "{not json"}},
    "config not a string": {"parameters": {"config": {"name": "victim"}}},
    "config wrong type": {"parameters": {"config": _config_json("victim", output=[
        {"name": "Y", "data_type": "TYPE_INT32", "dims": [2]}])}},
    "config other platform": {"parameters": {"config": _config_json("victim", platform="tensorflow_savedmodel")}},
}


@pytest.mark.parametrize("case", BAD_LOADS)
def test_bad_override_is_4xx_and_changes_nothing(both, case):
    before = _snapshot(both.repo.root, "victim")
    status, doc = both.json("POST", "/v2/repository/models/victim/load", BAD_LOADS[case], KEY)
    assert 400 <= status < 500 and doc["error"], (status, doc)
    assert _snapshot(both.repo.root, "victim") == before
    assert not [p for p in (both.repo.root / "victim").iterdir() if p.name.startswith(".staging")]
    with both.http() as client:
        assert client.get_model_metadata("victim")["versions"] == ["1"]
        np.testing.assert_array_equal(_add(client, httpclient, "victim", X), X + np.float32(1.0))


def test_refused_new_model_leaves_no_directory(both):
    status, doc = both.json("POST", "/v2/repository/models/ghost/load",
                            _bad("ghost", **{"file:1/model.onnx": base64.b64encode(b"junk").decode()}), KEY)
    assert status == 400 and "does not load" in doc["error"], doc
    assert not (both.repo.root / "ghost").exists()


def test_bad_override_over_grpc_is_invalid_argument(both):
    before = _snapshot(both.repo.root, "victim")
    with both.grpc() as client, pytest.raises(InferenceServerException) as info:
        client.load_model("victim", config=_config_json("victim"), files={"file:1/model.onnx": b"junk"},
                          headers=KEY)
    assert info.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert "does not load" in info.value.message()
    assert _snapshot(both.repo.root, "victim") == before


def test_override_needs_the_api_key(both):
    status, doc = both.json("POST", "/v2/repository/models/victim/load", _bad("victim", **{"file:1/model.onnx": GOOD}))
    assert status == 401, doc
    with both.grpc() as client, pytest.raises(InferenceServerException) as info:
        client.load_model("victim", config=_config_json("victim"), files={"file:1/model.onnx": b"x"})
    assert info.value.status() == str(grpc.StatusCode.UNAUTHENTICATED)
    assert both.repo.list_versions("victim") == [1]

