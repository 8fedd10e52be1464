"""Seeded, bounded adversarial runs: the codec under hypothesis, and a few thousand mutated
JSON and binary requests (infer and feedback) against a real gateway on 127.0.0.1.

Whatever arrives, the answer is never a 5xx other than 503 (busy), every error body is JSON
with a message, the server keeps answering bit-exactly, and the feedback store stays
readable and holds exactly the samples it acknowledged.
"""

from __future__ import annotations

import collections
import http.client
import json
import random
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core.budget import MemoryBudget
from gateway.http.codec import decode_request
from gateway.core.errors import GatewayError
from gateway.core.signature import Signature, TensorMeta
from model_repo import Repository
from model_repo.feedback import feedback_dir, read_feedback

from . import loop_models
from .conftest import API_KEY, make_settings, serve

SIGNATURE = Signature((TensorMeta("X", "FP32", (4,)), TensorMeta("T", "BYTES", (-1,))), (), 8)
DATATYPES = ["BOOL", "UINT8", "INT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "X", ""]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20)

tensor_headers = st.fixed_dictionaries(
    {"name": st.sampled_from(["X", "T", "Y"]) | json_values,
     "datatype": st.sampled_from(DATATYPES) | json_values,
     "shape": st.lists(st.integers(-2, 2**66), max_size=6) | json_values},
    optional={"data": json_values, "parameters": st.fixed_dictionaries(
        {"binary_data_size": st.integers(-4, 64) | json_values})})


def _expect_clean(body: bytes, header_length: int | None) -> None:
    try:
        decode_request(body, header_length, max_elements=1 << 20, spec=SIGNATURE,
                       claim=MemoryBudget(1 << 20).claim())
    except GatewayError as exc:
        assert exc.status in (400, 413, 503) and exc.message
    # Anything else raised is a bug: hypothesis reports it with the shrunk input.


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(inputs=st.lists(tensor_headers, max_size=3) | json_values, outputs=json_values | st.none(),
       binary=st.binary(max_size=96))
def test_codec_answers_any_header_with_a_client_error(inputs, outputs, binary):
    header = json.dumps({"inputs": inputs, "outputs": outputs}).encode()
    _expect_clean(header, None)
    _expect_clean(header + binary, len(header))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(body=st.binary(max_size=200), header_length=st.none() | st.integers(-3, 220))
def test_codec_answers_any_bytes_with_a_client_error(body, header_length):
    _expect_clean(body, header_length)


# ------------------------------------------------------------ against a server
def _valid_requests() -> list[tuple[str, bytes, dict[str, str], int]]:
    """(path, body, headers, feedback rows) of well-formed requests, JSON and binary."""
    x = np.array([[1, 0, 0, 0.5], [0, 1, 0, 0.5]], np.float32)
    json_infer = json.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 4],
                                         "data": x.ravel().tolist()}]}).encode()
    header = json.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 4],
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "P", "parameters": {"binary_data": True}}]}).encode()
    binary_infer = header + x.tobytes()
    feedback = json.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 4],
                                       "data": x.ravel().tolist()},
                                      {"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 1]}]}).encode()
    label = np.array([2], np.int64)
    fb_header = json.dumps({"inputs": [
        {"name": "X", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}},
        {"name": "label", "datatype": "INT64", "shape": [1], "parameters": {"binary_data_size": 8}}]}).encode()
    binary_feedback = fb_header + x[:1].tobytes() + label.tobytes()
    json_headers = {"Content-Type": "application/json", "X-API-Key": API_KEY}
    return [("/v2/models/clf/infer", json_infer, json_headers, 0),
            ("/v2/models/clf/infer", binary_infer, {**json_headers, "Inference-Header-Content-Length":
                                                    str(len(header))}, 0),
            ("/v2/models/clf/feedback", feedback, json_headers, 2),
            ("/v2/models/clf/feedback", binary_feedback, {**json_headers, "Inference-Header-Content-Length":
                                                          str(len(fb_header))}, 1)]


def _mutate(rng: random.Random, body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    headers = dict(headers)
    data = bytearray(body)
    kind = rng.randrange(7)
    if kind == 0:  # flip bytes
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:  # truncate
        del data[rng.randrange(len(data)):]
    elif kind == 2:  # splice a JSON token somewhere
        token = rng.choice([b"[", b"]", b"{", b"}", b'"', b",", b"null", b"-1", b"1e999", b"\\ud800", b"9" * 30])
        at = rng.randrange(len(data) + 1)
        data[at:at] = token
    elif kind == 3:  # change a number in the header (shapes, sizes)
        text = data.decode("latin-1")
        digits = [i for i, c in enumerate(text) if c.isdigit()]
        if digits:
            at = rng.choice(digits)
            text = text[:at] + rng.choice(["0", "-", "99999999999", "65536", "3.5", ""]) + text[at + 1:]
        data = bytearray(text.encode("latin-1"))
    elif kind == 4 and "Inference-Header-Content-Length" in headers:
        headers["Inference-Header-Content-Length"] = rng.choice(["0", "-1", "1", str(len(data) + 1), "x", "1e3"])
    elif kind == 5:  # replace a string value with another type
        text = data.decode("latin-1")
        for old in ('"FP32"', '"INT64"', '"X"', '"label"'):
            if old in text and rng.random() < 0.5:
                text = text.replace(old, rng.choice(["[]", "{}", "null", "7", '"BYTES"', '"UINT8"', '"P"']), 1)
        data = bytearray(text.encode("latin-1"))
    else:  # a deep nest
        depth = rng.choice([50, 1100, 4000])
        data = bytearray(b'{"inputs":' + b"[" * depth + b"]" * depth + b"}")
        headers.pop("Inference-Header-Content-Length", None)
    return bytes(data), headers


@pytest.fixture()
def fuzz_gateway(tmp_path):
    repo = Repository(tmp_path / "repo")
    loop_models.publish(repo, "clf", loop_models.classifier())
    with serve(make_settings(repo.root, api_key=API_KEY, loop={"trigger": "manual"})) as server:
        yield server


def test_mutated_requests_never_break_the_server(fuzz_gateway):
    server = fuzz_gateway
    rng = random.Random(20261201)
    valid = _valid_requests()
    statuses: collections.Counter[int] = collections.Counter()
    rows_acknowledged = 0
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    for batch in range(12):
        for _ in range(250):
            path, body, headers, rows = rng.choice(valid)
            sent_valid = rng.random() < 0.1
            if not sent_valid:
                body, headers = _mutate(rng, body, headers)
            status, answer = _exchange(conn, path, body, headers)
            statuses[status] += 1
            assert status < 500 or status == 503, (status, body[:200], answer[:300])
            if status >= 400:
                message = json.loads(answer)["error"]
                assert isinstance(message, str) and message
            elif path.endswith("/feedback"):
                rows_acknowledged += json.loads(answer)["samples"]
            if sent_valid:
                assert status == 200, answer
            if status >= 400 and conn.sock is None:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        _assert_exact_answer(server)
    conn.close()
    stored = read_feedback(feedback_dir(server.repo.root, "clf"))
    assert len(stored) == rows_acknowledged
    print(f"\nadversarial run: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}, "
          f"{rows_acknowledged} feedback rows acknowledged and stored")


def _exchange(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        answer = response.read()
    except (ConnectionError, http.client.HTTPException):
        conn.close()  # the server closed a connection it could not parse; a new one follows
        conn.connect()
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        answer = response.read()
    if response.getheader("Connection", "").lower() == "close":
        conn.close()
    return response.status, answer


def _assert_exact_answer(server) -> None:
    x = np.array([[0.25, 2.0, -1.0, 0.5]], np.float32)
    header = json.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4],
                                     "parameters": {"binary_data_size": 16}}],
                         "outputs": [{"name": "P", "parameters": {"binary_data": True}}]}).encode()
    status, headers, raw = server.request("POST", "/v2/models/clf/infer", header + x.tobytes(),
                                          {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200, raw
    json_length = int(headers["Inference-Header-Content-Length"])
    scores = np.frombuffer(raw[json_length:], np.float32)
    assert scores.tobytes() == x[0, :3].tobytes()  # the classifier's scores are X[:, :3] exactly
    assert struct.calcsize("<f") * 3 == len(raw) - json_length
