"""Malformed requests, each answered 4xx with a JSON message, and the server still serving.

Every case here was a 500 (or a wrong 200) once; the server and the official client are real.
"""

from __future__ import annotations

import gzip
import json
import socket
import struct

import numpy as np
import pytest

from .conftest import API_KEY

MLP = "/v2/models/mlp/infer"


def _post(gateway, path, body: bytes, headers=None):
    status, response_headers, raw = gateway.request("POST", path, body, {"Content-Type": "application/json",
                                                                          **(headers or {})})
    return status, response_headers, raw


def _error(status: int, headers: dict, raw: bytes) -> str:
    assert headers.get("Content-Type", "").startswith("application/json"), (status, headers, raw[:200])
    message = json.loads(raw)["error"]
    assert isinstance(message, str) and message
    return message


def _assert_serving(gateway):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    status, _, raw = _post(gateway, MLP, json.dumps(
        {"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 4], "data": x.ravel().tolist()}],
         "outputs": [{"name": "SUM"}]}).encode())
    assert status == 200, raw
    assert json.loads(raw)["outputs"][0]["data"] == (x + 1).ravel().tolist()


def _nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@pytest.mark.parametrize("path", [MLP, "/v2/models/mlp/feedback", "/v2/repository/index",
                                  "/v2/repository/models/mlp/load"])
def test_deeply_nested_json_is_400(gateway, path):
    body = ('{"inputs":' + _nested(5000) + "}").encode()
    status, headers, raw = _post(gateway, path, body, {"X-API-Key": API_KEY})
    assert status == 400, raw
    assert "JSON" in _error(status, headers, raw)
    _assert_serving(gateway)


@pytest.mark.parametrize("shape", [[0, 10**20], [0] * 65, [1] * 65, [-1, 4], [2**63, 0]])
def test_shapes_numpy_cannot_build_are_400(gateway, shape):
    for datatype, data in (("FP32", []), ("BYTES", [])):
        body = json.dumps({"inputs": [{"name": "X", "datatype": datatype, "shape": shape, "data": data}]})
        status, headers, raw = _post(gateway, MLP, body.encode())
        assert status == 400, raw
        assert "shape" in _error(status, headers, raw)
    _assert_serving(gateway)


@pytest.mark.parametrize("version", ["%C2%B2", "%D9%A2", "1%00", "+1", "0x1", "%EF%BC%91"])
def test_versions_are_ascii_digits_only(gateway, version):
    for suffix in ("", "/ready", "/config", "/stats"):
        status, headers, raw = gateway.request("GET", f"/v2/models/mlp/versions/{version}{suffix}")
        assert status == 404, (suffix, raw)
        assert "version" in _error(status, headers, raw)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_undecodable_compressed_body_is_400(gateway, encoding):
    status, headers, raw = _post(gateway, MLP, b"this is not compressed" * 4, {"Content-Encoding": encoding})
    assert status == 400, raw
    assert _error(status, headers, raw)
    _assert_serving(gateway)


def test_compressed_body_is_decoded(gateway):
    body = json.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}],
                       "outputs": [{"name": "SUM"}]}).encode()
    status, _, raw = _post(gateway, MLP, gzip.compress(body), {"Content-Encoding": "gzip"})
    assert status == 200, raw
    assert json.loads(raw)["outputs"][0]["data"] == [2, 3, 4, 5]


def test_non_utf8_api_key_is_401(gateway):
    for header in ("X-API-Key", "Authorization"):
        value = b"Bearer \xff\xfe" if header == "Authorization" else b"\xff\xfekey"
        raw_request = (b"POST /v2/repository/models/mlp/load HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                       + header.encode() + b": " + value + b"\r\nConnection: close\r\n\r\n")
        status, body = _raw_exchange(gateway.port, raw_request)
        assert status == 401, body
        assert "API key" in json.loads(body.split(b"\r\n\r\n", 1)[1])["error"]


def _raw_exchange(port: int, data: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    reply = b"".join(chunks)
    return int(reply.split(b" ", 2)[1]), reply


def test_lone_surrogate_in_bytes_data_is_400(gateway):
    body = b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1],"data":["\\ud800"]}]}'
    status, headers, raw = _post(gateway, "/v2/models/upper/infer", body)
    assert status == 400, raw
    assert _error(status, headers, raw)


@pytest.mark.parametrize("datatype", [[], {}, None, 7, "fp32", "FP32 "])
def test_datatype_that_is_not_a_name_is_400(gateway, datatype):
    body = json.dumps({"inputs": [{"name": "X", "datatype": datatype, "shape": [1, 4], "data": [1, 2, 3, 4]}]})
    status, headers, raw = _post(gateway, MLP, body.encode())
    assert status == 400, raw
    assert "datatype" in _error(status, headers, raw)


@pytest.mark.parametrize("parameters", [[1], True, "config", 3])
def test_repository_load_parameters_must_be_an_object(gateway, parameters):
    status, headers, raw = _post(gateway, "/v2/repository/models/mlp/load",
                                 json.dumps({"parameters": parameters}).encode(), {"X-API-Key": API_KEY})
    assert status == 400, raw
    assert "parameters" in _error(status, headers, raw)


@pytest.mark.parametrize(("parameters", "reason"), [({"config": "{}"}, "does not load under the given config"),
                                                  ({"file:1/model.onnx": "AA=="}, "needs the 'config' parameter")])
def test_repository_load_with_a_bad_override_is_400(gateway, parameters, reason):
    status, headers, raw = _post(gateway, "/v2/repository/models/mlp/load",
                                 json.dumps({"parameters": parameters}).encode(), {"X-API-Key": API_KEY})
    assert status == 400, raw
    assert reason in _error(status, headers, raw)
    assert gateway.repo.list_versions("mlp") == [1]


def test_repository_index_ready_must_be_boolean(gateway):
    status, headers, raw = _post(gateway, "/v2/repository/index", b'{"ready": "no"}')
    assert status == 400, raw
    assert "ready" in _error(status, headers, raw)


@pytest.mark.parametrize("path", ["/v2/models/mlp/finetune/a%00b", "/v2/models/mlp/finetune/a%00b/cancel",
                                  "/v2/models/mlp/finetune/..%2F..%2Fetc", "/v2/models/mlp/finetune/" + "a" * 300])
def test_bad_job_id_is_4xx(gateway, path):
    method = "POST" if path.endswith("/cancel") else "GET"
    status, headers, raw = gateway.request(method, path, b"" if method == "POST" else None, {"X-API-Key": API_KEY})
    assert status in (400, 404), raw
    assert "job" in _error(status, headers, raw)


def test_client_gone_mid_body_is_not_a_server_error(gateway):
    before = _status_count(gateway, "500")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n{\"inputs\": [")
    _assert_serving(gateway)
    assert _status_count(gateway, "500") == before


def _status_count(gateway, status: str) -> float:
    _, _, raw = gateway.request("GET", "/metrics")
    total = 0.0
    for line in raw.decode().splitlines():
        if line.startswith("tunegate_http_errors_total") and f'status="{status}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# ------------------------------------------------------------- memory claims
def _binary_bytes_request(claimed: int, data: bytes) -> tuple[bytes, dict]:
    header = json.dumps({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [claimed],
                                     "parameters": {"binary_data_size": len(data)}}]}).encode()
    return header + data, {"Inference-Header-Content-Length": str(len(header)),
                           "Content-Type": "application/octet-stream"}


def test_bytes_count_is_bounded_by_the_data(gateway):
    body, headers = _binary_bytes_request(1 << 26, struct.pack("<I", 0))
    status, response_headers, raw = gateway.request("POST", "/v2/models/upper/infer", body, headers)
    assert status == 400, raw
    assert "BYTES" in _error(status, response_headers, raw)


def test_datatype_is_checked_before_decoding(gateway):
    # A BYTES claim against an FP32 input is refused on its header, whatever the data.
    body, headers = _binary_bytes_request(1 << 20, b"\0" * 64)
    status, response_headers, raw = gateway.request("POST", MLP, body, headers)
    assert status == 400, raw
    assert "TEXT" in _error(status, response_headers, raw)


def test_feedback_labels_are_checked_before_decoding(gateway):
    header = json.dumps({"inputs": [
        {"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]},
        {"name": "label", "datatype": "BYTES", "shape": [1 << 26], "parameters": {"binary_data_size": 4}}]}).encode()
    status, headers, raw = gateway.request("POST", "/v2/models/mlp/feedback", header + b"\0\0\0\0",
                                           {"Inference-Header-Content-Length": str(len(header)),
                                            "X-API-Key": API_KEY})
    assert status == 400, raw
    assert "label" in _error(status, headers, raw)


def test_parser_refusals_are_one_warning_line_not_an_error_traceback(gateway, caplog):
    caplog.set_level("DEBUG", logger="aiohttp.server")
    for bad in (b"GET /v2 HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
                b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n"):
        status, _ = _raw_exchange(gateway.port, bad)
        assert status in (400, 431)
    _assert_serving(gateway)
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert records and not [r for r in records if r.levelname == "ERROR" or r.exc_info]
    assert all("refused a malformed request" in r.getMessage() for r in records if r.levelname == "WARNING")
