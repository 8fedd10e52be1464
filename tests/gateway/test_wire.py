"""The wire, through the unmodified tritonclient against a real gateway: Triton's raw binary
request (Inference-Header-Content-Length: 0), compressed answers (HTTP Accept-Encoding,
gRPC's own compression), and the extensions /v2 advertises, each of which must work."""

from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from model_repo import Repository, TensorSpec, make_config

from . import models
from .conftest import API_KEY
from .grpc_fixture import both_settings, echo_config, echo_model, serve_both

KEY = {"x-api-key": API_KEY}
HEADER_LENGTH = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    repo = Repository(tmp_path_factory.mktemp("wire-repo"))
    models.publish(repo, "mlp", models.mlp_fp32(), models.mlp_config("mlp"))
    models.publish(repo, "addc", models.add_const_fp32(1.0), models.add_const_config("addc"))
    models.publish(repo, "upper1", models.bytes_model(),
                   make_config("upper1", [TensorSpec("TEXT", "BYTES", (1,))], [TensorSpec("UPPER", "BYTES", (1,))]))
    models.publish(repo, "upper", models.bytes_model(), models.bytes_config("upper"))
    models.publish(repo, "echo", echo_model(), echo_config("echo"))
    with serve_both(both_settings(repo.root, api_key=API_KEY, max_body_bytes=1 << 20)) as server:
        yield server


def _raw(both, model: str, body: bytes, extra=None) -> tuple[int, dict, bytes]:
    return both.request("POST", f"/v2/models/{model}/infer", body,
                        {HEADER_LENGTH: "0", "Content-Type": "application/octet-stream", **(extra or {})})


def _result(headers: dict, body: bytes) -> httpclient.InferResult:
    return httpclient.InferenceServerClient.parse_response_body(body, header_length=int(headers[HEADER_LENGTH]))


# ------------------------------------------------------------------ raw binary requests
def test_raw_binary_request_is_the_one_input_at_batch_one(both):
    x = np.array([0.25, -8.5], np.float32)
    status, headers, body = _raw(both, "addc", x.tobytes())
    assert status == 200, body
    result = _result(headers, body)  # every output comes back in binary
    np.testing.assert_array_equal(result.as_numpy("Y"), (x + np.float32(1.0)).reshape(1, 2))


def test_raw_binary_request_deduces_the_variable_dimension(both):
    status, headers, body = _raw(both, "mlp", np.arange(4, dtype=np.float32).tobytes())
    assert status == 200, body
    result = _result(headers, body)
    assert result.as_numpy("OUT").shape == (1, 3) and result.as_numpy("SUM").shape == (1, 4)


def test_raw_binary_request_of_bytes_is_one_element(both):
    status, headers, body = _raw(both, "upper1", b"hello wire")
    assert status == 200, body
    assert _result(headers, body).as_numpy("UPPER").tolist() == [b"HELLO WIRE"]


@pytest.mark.parametrize(("model", "body", "reason"), [
    ("addc", b"\0" * 7, "no whole FP32 tensor"),
    ("addc", b"\0" * 16, "no whole FP32 tensor"),  # the shape is fixed: [2] only
    ("addc", b"", "no whole FP32 tensor"),
    ("echo", b"\0" * 12, "exactly one input"),
    ("upper", b"abc", "shape [1]"),
])
def test_raw_binary_request_that_cannot_be_read_is_400(both, model, body, reason):
    status, _, raw = _raw(both, model, body)
    assert status == 400 and reason in raw.decode(), raw


# ------------------------------------------------------------------ compression
def _mlp_rows(module, rows: int = 16):
    x = np.linspace(-1, 1, rows * 4, dtype=np.float32).reshape(rows, 4)
    tensor = module.InferInput("X", [rows, 4], "FP32")
    tensor.set_data_from_numpy(x)
    return [tensor]


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_http_answer_compressed_for_tritonclient(both, algorithm):
    with both.http() as client:
        plain = client.infer("mlp", _mlp_rows(httpclient))
        packed = client.infer("mlp", _mlp_rows(httpclient), response_compression_algorithm=algorithm,
                              request_compression_algorithm=algorithm)
        for name in ("OUT", "SUM"):
            np.testing.assert_array_equal(packed.as_numpy(name), plain.as_numpy(name))


@pytest.mark.parametrize(("accept", "coding"), [("gzip", "gzip"), ("deflate", "deflate"), ("br, deflate;q=0.5", "deflate"),
                                               ("gzip;q=0, deflate", "deflate"), ("gzip;q=0", None), ("*", "gzip"),
                                               ("identity", None), (None, None)])
def test_http_answer_coding_follows_accept_encoding(both, accept, coding):
    status, plain_headers, plain = both.request("POST", "/v2/models/mlp/infer", _mlp_json(16))
    headers = {"Content-Type": "application/json", **({"Accept-Encoding": accept} if accept else {})}
    status, got_headers, body = both.request("POST", "/v2/models/mlp/infer", _mlp_json(16), headers)
    assert status == 200 and len(plain) >= 1024
    assert got_headers.get("Content-Encoding") == coding
    decode = {"gzip": gzip.decompress, "deflate": zlib.decompress, None: bytes}[coding]
    assert decode(body) == plain


def test_small_answer_is_not_compressed(both):
    status, headers, body = both.request("POST", "/v2/models/mlp/infer", _mlp_json(1), {"Accept-Encoding": "gzip"})
    assert status == 200 and len(body) < 1024
    assert "Content-Encoding" not in headers


def test_binary_answer_compressed_keeps_its_header_length(both):
    with both.http() as client:
        outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in ("OUT", "SUM")]
        plain = client.infer("mlp", _mlp_rows(httpclient), outputs=outputs)
        packed = client.infer("mlp", _mlp_rows(httpclient), outputs=outputs, response_compression_algorithm="gzip")
        np.testing.assert_array_equal(packed.as_numpy("SUM"), plain.as_numpy("SUM"))


def _mlp_json(rows: int) -> bytes:
    data = np.linspace(-1, 1, rows * 4, dtype=np.float32).reshape(rows, 4).tolist()
    return json.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [rows, 4], "data": data}]}).encode()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_grpc_compression_from_tritonclient(both, algorithm):
    with both.grpc() as client:
        plain = client.infer("mlp", _mlp_rows(grpcclient))
        packed = client.infer("mlp", _mlp_rows(grpcclient), compression_algorithm=algorithm)
        np.testing.assert_array_equal(packed.as_numpy("OUT"), plain.as_numpy("OUT"))


# ------------------------------------------------------------------ advertised extensions
def _probe_binary(http, grpc_client):
    out = [httpclient.InferRequestedOutput("Y", binary_data=True)]
    x = httpclient.InferInput("X", [1, 2], "FP32")
    x.set_data_from_numpy(np.ones((1, 2), np.float32), binary_data=True)
    assert http.infer("addc", [x], outputs=out).as_numpy("Y").tolist() == [[2.0, 2.0]]


def _probe_classification(http, grpc_client):
    out = [httpclient.InferRequestedOutput("OUT", class_count=1)]
    assert http.infer("mlp", _mlp_rows(httpclient, 1), outputs=out).as_numpy("OUT").shape == (1, 1)


def _probe_repository(http, grpc_client):
    assert {m["name"] for m in http.get_model_repository_index()} >= {"mlp", "addc"}
    http.load_model("addc", headers=KEY)
    grpc_client.load_model("addc", headers=KEY)


def _probe_schedule_policy(http, grpc_client):
    assert http.infer("addc", _addc(), priority=1, timeout=10_000_000).as_numpy("Y") is not None


def _addc():
    x = httpclient.InferInput("X", [1, 2], "FP32")
    x.set_data_from_numpy(np.zeros((1, 2), np.float32))
    return [x]


PROBES = {
    "binary_tensor_data": _probe_binary,
    "classification": _probe_classification,
    "model_configuration": lambda http, g: http.get_model_config("mlp") and g.get_model_config("mlp"),
    "model_repository": _probe_repository,
    "schedule_policy": _probe_schedule_policy,
    "statistics": lambda http, g: http.get_inference_statistics("mlp") and g.get_inference_statistics("mlp"),
    "system_shared_memory": lambda http, g: http.get_system_shared_memory_status() is not None,
    "trace": lambda http, g: http.get_trace_settings() and g.get_trace_settings(),
    "logging": lambda http, g: http.get_log_settings() and g.get_log_settings(headers=KEY),
}


def test_advertised_extensions_work_on_both_protocols(both):
    with both.http() as http, both.grpc() as grpc_client:
        over_http = http.get_server_metadata()["extensions"]
        assert grpc_client.get_server_metadata(as_json=True)["extensions"] == over_http
        assert {"binary_tensor_data", "model_configuration", "model_repository", "statistics"} <= set(over_http)
        unprobed = set(over_http) - PROBES.keys()
        assert not unprobed, f"advertised with no probe here: {unprobed}"
        for name in over_http:
            PROBES[name](http, grpc_client)
