"""The v2 protocol through the official tritonclient, and its error answers over raw HTTP."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException


def _input(name, array, datatype, binary=True):
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def test_server_and_model_metadata(gateway):
    client = gateway.client()
    assert client.is_server_live() and client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("mlp")
    assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in meta["outputs"]] == ["OUT", "SUM"]
    assert meta["parameters"]["execution_provider"] == "CPUExecutionProvider"
    assert client.is_model_ready("mlp") and client.is_model_ready("mlp", "1")
    config = client.get_model_config("mlp")
    assert config["max_batch_size"] == 16 and config["input"][0]["dims"] == [4]
    assert client.get_model_metadata("upper")["inputs"][0]["shape"] == [-1]  # not batching: no batch dim


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_fp32_and_requested_outputs(gateway, binary):
    client = gateway.client()
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    result = client.infer("mlp", [_input("X", x, "FP32", binary)])
    np.testing.assert_array_equal(result.as_numpy("SUM"), x + 1)
    assert result.as_numpy("OUT").shape == (3, 3)
    only = client.infer("mlp", [_input("X", x, "FP32", binary)],
                        outputs=[triton.InferRequestedOutput("SUM", binary_data=binary)])
    assert [o["name"] for o in only.get_response()["outputs"]] == ["SUM"]
    np.testing.assert_array_equal(only.as_numpy("SUM"), x + 1)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_int64_bytes_bool(gateway, binary):
    client = gateway.client()
    x = np.array([[1, -2, 3], [2**40, 0, -7]], dtype=np.int64)
    out = client.infer("int64", [_input("X", x, "INT64", binary)],
                       outputs=[triton.InferRequestedOutput("Y", binary_data=binary)])
    np.testing.assert_array_equal(out.as_numpy("Y"), x * 3 + 1)

    text = np.array([b"abc", b"Hello world", b""], dtype=object)
    out = client.infer("upper", [_input("TEXT", text, "BYTES", binary)],
                       outputs=[triton.InferRequestedOutput("UPPER", binary_data=binary)])
    upper = [v if isinstance(v, bytes) else v.encode() for v in out.as_numpy("UPPER")]
    assert upper == [b"ABC", b"HELLO WORLD", b""]

    a = np.array([[True, False], [False, False]])
    b = np.array([[True, True], [False, True]])
    out = client.infer("bools", [_input("A", a, "BOOL", binary), _input("B", b, "BOOL", binary)],
                       outputs=[triton.InferRequestedOutput("NOT_A", binary_data=binary),
                                triton.InferRequestedOutput("BOTH", binary_data=binary)])
    np.testing.assert_array_equal(out.as_numpy("NOT_A"), ~a)
    np.testing.assert_array_equal(out.as_numpy("BOTH"), a & b)


def test_unknown_model_is_404(gateway):
    with pytest.raises(InferenceServerException) as info:
        gateway.client().infer("nope", [_input("X", np.zeros((1, 4), np.float32), "FP32")])
    assert info.value.status() == "404"
    status, body = gateway.json("GET", "/v2/models/mlp/versions/9")
    assert status == 404 and "no version 9" in body["error"]


def _infer_json(gateway, model, doc, headers=None):
    return gateway.json("POST", f"/v2/models/{model}/infer", doc, headers)


def test_wrong_shape_and_datatype_are_400(gateway):
    status, body = _infer_json(gateway, "mlp", {"inputs": [
        {"name": "X", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]})
    assert status == 400 and "shape [1, 5]" in body["error"]
    status, body = _infer_json(gateway, "mlp", {"inputs": [
        {"name": "X", "shape": [1, 4], "datatype": "INT32", "data": [1, 2, 3, 4]}]})
    assert status == 400 and "datatype INT32" in body["error"]
    status, body = _infer_json(gateway, "mlp", {"inputs": [
        {"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]})
    assert status == 400 and "3 elements" in body["error"]
    status, body = _infer_json(gateway, "mlp", {"inputs": [
        {"name": "X", "shape": [17, 4], "datatype": "FP32", "data": [0.0] * 68}]})
    assert status == 400 and "batch size 17" in body["error"]
    status, body = _infer_json(gateway, "mlp", {"inputs": [
        {"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], "outputs": [{"name": "NOPE"}]})
    assert status == 400 and "unknown output 'NOPE'" in body["error"]
    # the server keeps serving after all of these
    assert gateway.client().infer("mlp", [_input("X", np.ones((1, 4), np.float32), "FP32")]).as_numpy("SUM")[0, 0] == 2


def test_truncated_binary_body_is_400(gateway):
    header = json.dumps({"inputs": [{"name": "X", "shape": [2, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 32}}]}).encode()
    body = header + np.ones(4, np.float32).tobytes()  # 16 of the 32 bytes declared
    status, _, raw = gateway.request("POST", "/v2/models/mlp/infer", body,
                                     {"Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and "binary_data_size 32 runs past the end" in json.loads(raw)["error"]
    status, _, raw = gateway.request("POST", "/v2/models/mlp/infer", body,
                                     {"Inference-Header-Content-Length": str(len(body) + 1)})
    assert status == 400 and "outside the body" in json.loads(raw)["error"]
    text_header = json.dumps({"inputs": [{"name": "TEXT", "shape": [2], "datatype": "BYTES",
                                          "parameters": {"binary_data_size": 9}}]}).encode()
    chunk = (3).to_bytes(4, "little") + b"abc" + b"\x05\x00"  # second length prefix cut short
    status, _, raw = gateway.request("POST", "/v2/models/upper/infer", text_header + chunk,
                                     {"Inference-Header-Content-Length": str(len(text_header))})
    assert status == 400 and "BYTES data ends" in json.loads(raw)["error"]


def test_oversized_body_is_413(gateway):
    body = b"x" * ((1 << 20) + 1)  # the test server allows 1 MiB
    status, _, raw = gateway.request("POST", "/v2/models/mlp/infer", body, {"Content-Type": "application/json"})
    assert status == 413 and "too large" in json.loads(raw)["error"]


def test_stats_metrics_and_request_id(gateway):
    client = gateway.client()
    client.infer("int64", [_input("X", np.ones((2, 3), np.int64), "INT64")])
    stats = client.get_inference_statistics("int64")["model_stats"][0]
    assert stats["inference_count"] >= 2 and stats["inference_stats"]["success"]["count"] >= 1
    status, headers, text = gateway.request("GET", "/metrics", headers={"X-Request-ID": "abc-123"})
    assert status == 200 and headers["X-Request-ID"] == "abc-123"
    assert 'nv_inference_count{model="int64",version="1"}' in text.decode()
    assert 'execution_provider="CPUExecutionProvider"' in text.decode()
