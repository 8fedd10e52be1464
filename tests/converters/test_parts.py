"""The pipeline's parts on small hand-made inputs: parity arithmetic, the op scan, config
derivation, external data."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from converters import ParityError, UnsupportedOpError, check, onnx_files, parity, triton
from converters.sources.base import InputSpec


def _matmul_model(batch_dim="N", rows: int = 4, cols: int = 3):
    weight = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols) / 10
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch_dim, cols])],
        [onnx.numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), weight


def test_compare_reports_abs_and_rel_and_tolerance():
    ref = {"y": np.array([[1.0, 100.0, 0.0]])}
    got = {"y": np.array([[1.0, 100.2, 1e-6]])}
    report = parity.compare(ref, got, atol=1e-4, rtol=1e-3)["y"]
    assert report["max_abs"] == pytest.approx(0.2)
    assert report["max_rel"] == pytest.approx(2e-3)  # the 0.0 reference is left out of relative error
    assert report["passed"] is False  # 0.2 > 1e-4 + 1e-3 * 100
    assert parity.compare(ref, got, atol=1e-3, rtol=3e-3)["y"]["passed"] is True


def test_compare_catches_nan_and_shape():
    assert not parity.compare({"y": np.ones(3)}, {"y": np.array([1, np.nan, 1])}, 1, 1)["y"]["passed"]
    assert not parity.compare({"y": np.ones(3)}, {"y": np.ones(4)}, 1, 1)["y"]["passed"]


def test_generated_inputs_respect_int_range_and_variable_dims():
    specs = [InputSpec("ids", np.dtype(np.int32), (None, None), high=7), InputSpec("x", np.dtype(np.float32), (None, 3))]
    feeds = parity.generate_inputs(specs, batch=8)
    assert feeds["ids"].shape == (8, parity.VARIABLE_DIM) and feeds["ids"].dtype == np.int32
    assert feeds["ids"].min() >= 0 and feeds["ids"].max() < 7
    assert feeds["x"].shape == (8, 3)


def test_check_parity_against_a_real_session(tmp_path):
    model, weight = _matmul_model()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batches = [parity.generate_inputs([InputSpec("x", np.dtype(np.float32), (None, 4))], b) for b in (1, 8)]
    report = parity.check_parity(lambda f: {"y": f["x"] @ weight}, session, batches, atol=1e-5, rtol=1e-5)
    assert report["passed"] and report["batches"] == [1, 8]
    with pytest.raises(ParityError, match="y") as info:
        parity.check_parity(lambda f: {"y": f["x"] @ weight + 1e-3}, session, batches, atol=1e-5, rtol=1e-5)
    assert info.value.report["max_abs"] == pytest.approx(1e-3, rel=1e-2)


def test_top1_agreement_ignores_near_ties():
    ref = {"p": np.array([[0.5, 0.5 + 1e-7], [0.1, 0.9]])}
    got = {"p": np.array([[0.6, 0.4], [0.9, 0.1]])}
    assert parity.top1_agreement(ref, got, margin=1e-3) == {"p": 0.0}  # only row 2 counts, and it flips


def test_unconverted_ops_are_found_in_subgraphs():
    body = helper.make_graph([helper.make_node("Erfc", ["a"], ["b"], domain="ai.onnx.converters.tensorflow")],
                             "body", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
                             [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])
    node = helper.make_node("If", ["c"], ["out"], then_branch=body, else_branch=body)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    assert check.unconverted_ops(model) == {"Erfc": 2}
    with pytest.raises(UnsupportedOpError, match=r"Erfc \(x2\)"):
        check.check_ops(model)
    assert not check.unconverted_ops(_matmul_model()[0])


def test_config_from_graph_dynamic_and_fixed_batch():
    config = triton.config_for(_matmul_model()[0], "m", max_batch_size=8)
    assert config.max_batch_size == 8 and list(config.input[0].dims) == [4] and list(config.output[0].dims) == [3]
    fixed = triton.config_for(_matmul_model(batch_dim=2)[0], "m")
    assert fixed.max_batch_size == 0 and list(fixed.input[0].dims) == [2, 4]
    assert not fixed.HasField("dynamic_batching")


def test_external_data_beyond_threshold(tmp_path):
    model, weight = _matmul_model(rows=64, cols=64)
    path = tmp_path / "model.onnx"
    assert onnx_files.save_model(model, path, threshold=1000)  # a 16 KiB weight is "large" here
    assert (tmp_path / "model.onnx.data").stat().st_size >= weight.nbytes
    assert path.stat().st_size < weight.nbytes
    check.check_model_file(path)
    session = check.open_session(path)
    x = np.ones((2, 64), np.float32)
    np.testing.assert_allclose(session.run(["y"], {"x": x})[0], x @ weight, rtol=1e-5)
    assert not onnx_files.save_model(model, tmp_path / "small.onnx")


def test_pipeline_writes_external_data_for_big_models(tmp_path, monkeypatch):
    """A real conversion past the size limit (lowered, so the test stays small) publishes
    model.onnx plus model.onnx.data, both in the manifest, and still loads and matches."""
    from converters import examples, publish_keras_model
    from model_repo import Repository

    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_THRESHOLD", 10_000)
    repo = Repository(tmp_path)
    manifest = publish_keras_model(examples.basic_mlp(), repo, "big")
    assert manifest.extra["external_data"] is True
    assert {"model.onnx", "model.onnx.data"} <= set(manifest.files)
    version_dir = repo.version_dir("big", 1)
    assert (version_dir / "model.onnx").stat().st_size < 10_000 < (version_dir / "model.onnx.data").stat().st_size
    assert manifest.parity["passed"]
    repo.verify("big", 1)


def test_in_memory_models_keep_their_input_layer_names():
    # keras.applications (and any keras.Input without a name) leave the tensor named
    # keras_tensor_N; the InputLayer's name is what a user sees and what ONNX must carry.
    import keras

    from converters.sources.keras import keras_source

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="scores")(inputs))
    assert inputs.name.startswith("keras_tensor")
    source = keras_source(model)
    assert [spec.name for spec in source.inputs] == [model.layers[0].name]
    assert source.inputs[0].name.startswith("input_layer") and source.output_names == ["scores"]
