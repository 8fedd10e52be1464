"""The issue 2 corpus, converted end to end by the library: parity, a config Triton's schema
parses, an onnxruntime session that loads and answers with the Keras names."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from converters import Options, publish_file
from model_repo import Repository

CORPUS = {
    # key: (inputs, outputs, source format, source path)
    "mlp_h5": (["features"], ["probabilities"], "keras", "source/model.keras"),
    "sequential_keras": (["image"], ["digit"], "keras", "source/model.keras"),
    "two_in_two_out": (["extra", "numbers"], ["label", "score"], "keras", "source/model.keras"),
    "conv_bn_cnn": (["image"], ["class_probs"], "keras", "source/model.keras"),
    "text_lstm": (["tokens"], ["sentiment"], "keras", "source/model.keras"),
    "text_gru": (["tokens"], ["sentiment"], "keras", "source/model.keras"),
    "mobilenet_v2": (["input_layer"], ["predictions"], "keras", "source/model.keras"),
    "saved_model": (["x"], ["y"], "saved_model", "source/saved_model"),
    "graphdef": (["x"], ["Identity"], "graphdef", "source/model.pb"),
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Repository:
    return Repository(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def published(corpus, repo):
    """Each corpus model published once; tests below inspect the results."""
    return {key: publish_file(corpus[key], repo, key.replace("_", "-"), options=Options(max_batch_size=16))
            for key in CORPUS}


@pytest.mark.parametrize("key", list(CORPUS))
def test_corpus_model_converts_with_parity(key, published, repo):
    inputs, outputs, fmt, source_path = CORPUS[key]
    manifest = published[key]
    name = key.replace("_", "-")
    assert manifest.version == 1
    parity = manifest.parity
    assert parity["passed"] and parity["batches"] == [1, 8]
    assert set(parity["outputs"]) == set(outputs)
    assert parity["max_abs"] <= 1e-4, parity
    assert all(o["varies"] for o in parity["outputs"].values()), "constant answers make parity meaningless"
    assert manifest.source["format"] == fmt and manifest.source["path"] == source_path
    version_dir = repo.version_dir(name, 1)
    assert (version_dir / source_path).exists()
    repo.verify(name, 1)

    config = text_format.Parse((repo.model_dir(name) / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 16
    assert sorted(i.name for i in config.input) == sorted(inputs)
    assert sorted(o.name for o in config.output) == sorted(outputs)
    assert config.HasField("dynamic_batching")

    model = onnx.load(str(version_dir / "model.onnx"))
    onnx.checker.check_model(model)
    session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sorted(i.name for i in session.get_inputs()) == sorted(inputs)
    assert sorted(o.name for o in session.get_outputs()) == sorted(outputs)
    # The config's dims are the graph's minus the batch dimension.
    for tensor in config.input:
        graph_input = next(i for i in session.get_inputs() if i.name == tensor.name)
        assert len(tensor.dims) == len(graph_input.shape) - 1
        assert all(d == -1 or d == g for d, g in zip(tensor.dims, graph_input.shape[1:]))


def test_keras_source_reloads_and_matches_onnx(published, repo):
    """The kept source is the trainable original: reloaded, it answers like model.onnx."""
    import keras

    version_dir = repo.version_dir("two-in-two-out", 1)
    model = keras.saving.load_model(version_dir / "source/model.keras", compile=False)
    rng = np.random.default_rng(5)
    feeds = {"numbers": rng.standard_normal((3, 12)).astype(np.float32),
             "extra": rng.standard_normal((3, 4)).astype(np.float32)}
    label, score = model([feeds["numbers"], feeds["extra"]], training=False)
    session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_label, onnx_score = session.run(["label", "score"], feeds)
    np.testing.assert_allclose(onnx_label, np.asarray(label), atol=1e-5)
    np.testing.assert_allclose(onnx_score, np.asarray(score), atol=1e-5)


def test_gelu_erfc_is_rewritten(published, repo):
    """Exact GELU traces to Erfc; the converter must leave only ONNX ops (Erf, not Erfc)."""
    model = onnx.load(str(repo.version_dir("two-in-two-out", 1) / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert "Erf" in ops and "Erfc" not in ops
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}


def test_text_model_tokens_stay_int(published, repo):
    config = repo.read_config("text-lstm")
    assert model_config_pb2.DataType.Name(config.input[0].data_type) == "TYPE_INT32"
    assert list(config.input[0].dims) == [20]


def test_manifest_records_lineage_and_timings(published, repo):
    data = json.loads((repo.version_dir("mlp-h5", 1) / "manifest.json").read_text())
    assert data["parent_version"] is None
    assert data["extra"]["opset"] == 17
    assert data["extra"]["converter"]["params"] == 100 * 64 + 64 + 64 * 10 + 10
    assert "tf2onnx" in data["extra"]["converter"]["timings_s"]
