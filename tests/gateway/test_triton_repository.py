"""Every config.pbtxt tunegate writes, as Triton sees it.

The tritonserver here has no ONNX Runtime backend, so it cannot *serve* an
``onnxruntime_onnx`` model; it still parses each config.pbtxt with its own schema and
validates it before it looks for the backend. A config it accepts fails only with the
missing backend; a broken one fails with a config error: that difference is the test.
"""

from __future__ import annotations

import json
import urllib.request

import onnx
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from converters.triton import config_for
from model_repo.triton import python_backend_config
from tests.triton_server import tritonserver

from . import models
from .conftest import build_repository


def _written_configs(root):
    """The configs model_repo.make_config and the converters write, in a real repository."""
    repo = build_repository(root)
    converted = config_for(onnx.load_from_string(models.mlp_fp32()), "converted_mlp")
    models.publish(repo, "converted_mlp", models.mlp_fp32(), converted)
    return repo


def test_configs_parse_with_tritons_schema_and_say_onnxruntime(tmp_path):
    repo = _written_configs(tmp_path)
    for name in repo.list_models():
        text = (repo.model_dir(name) / "config.pbtxt").read_text()
        config = text_format.Parse(text, mc.ModelConfig())  # strict: unknown fields fail
        assert config.name == name and config.platform == "onnxruntime_onnx"
        assert config.input and config.output
        if config.max_batch_size > 0:
            assert config.HasField("dynamic_batching")
        # What the Python-backend view serves is the same model but for the backend.
        wrapped = python_backend_config(config)
        assert (wrapped.backend, wrapped.platform) == ("python", "")
        assert list(wrapped.input) == list(config.input) and list(wrapped.output) == list(config.output)
        assert wrapped.max_batch_size == config.max_batch_size


def _index(server):
    request = urllib.request.Request(f"http://{server.url}/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return {row["name"]: row for row in json.loads(response.read())}


def test_tritonserver_accepts_every_config_but_lacks_the_onnxruntime_backend(tmp_path):
    repo = _written_configs(tmp_path / "repo")
    names = repo.list_models()
    # A control: the same repository with one config Triton must reject as a config.
    broken = tmp_path / "repo" / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "1" / "model.onnx").write_bytes(models.mlp_fp32())
    (broken / "config.pbtxt").write_text('name: "broken"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 4\n'
                                         'input { name: "X" data_type: TYPE_FP32 dims: [ 4 ] }\n'
                                         'output { name: "OUT" data_type: TYPE_FP32 dimz: [ 3 ] }\n')  # misspelt field
    # Loading is over before the server reports ready; not exiting on errors keeps it up.
    with tritonserver(repo.root, poll_seconds=None,
                      extra_args=["--exit-on-error=false", "--strict-readiness=false"]) as server:
        index = _index(server)
        log = server.log_tail(200_000)
    assert set(index) == {*names, "broken"}
    assert {index[n]["state"] for n in names} == {"UNAVAILABLE"}
    for name in names:
        reason = index[name]["reason"]
        assert "onnxruntime" in reason and "backend" in reason, (name, reason)
    # The control never got as far as a backend: Triton rejected its config as text.
    assert "state" not in index["broken"], index["broken"]
    assert 'has no field named "dimz"' in log and "model directory 'broken'" in log, log[-3000:]
    for name in names:  # and none of the written configs drew a parse error
        assert f"model directory '{name}'" not in log

