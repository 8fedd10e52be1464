"""Feedback on a text model (issue 25) through a real gateway: BYTES inputs sent over HTTP JSON
and HTTP binary, or captured from an infer over gRPC or HTTP and labelled later, are stored
and read back as the texts sent; text that is not UTF-8 is refused, and a text record that
does not decode is quarantined and counted like a numeric one."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from converters import publish_keras_model
from model_repo import Repository
from model_repo.feedback import feedback_dir, read_feedback
from tests.converters import preprocessing_models as pm
from tests.model_repo.test_feedback_strings import _record_with_raw_text

from .conftest import wait_for
from .grpc_fixture import both_settings, serve_both

MODEL = "sentiment"
PATH = f"/v2/models/{MODEL}/feedback"


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("string_feedback")
    assert publish_keras_model(pm.sentiment(), Repository(root), MODEL).parity["passed"]
    with serve_both(both_settings(root, loop={"capture": True})) as server:
        yield server


def _stored(both):
    return read_feedback(feedback_dir(both.gateway.repo.root, MODEL))


def _binary_feedback(both, texts: list, labels: list[int], request_id: str | None = None):
    """A feedback body in Triton's binary extension, built by the unmodified tritonclient."""
    text = httpclient.InferInput("text", [len(texts), 1], "BYTES")
    text.set_data_from_numpy(np.array([[t] for t in texts], dtype=object), binary_data=True)
    label = httpclient.InferInput("label", [len(labels)], "INT64")
    label.set_data_from_numpy(np.array(labels, np.int64), binary_data=True)
    parameters = None if request_id is None else {"request_id": request_id}
    body, json_size = httpclient.InferenceServerClient.generate_request_body([text, label], parameters=parameters)
    status, _, answer = both.request("POST", PATH, body, {"Inference-Header-Content-Length": str(json_size),
                                                         "Content-Type": "application/octet-stream"})
    return status, json.loads(answer)


def _label_only(both, request_id: str, labels: list[int]):
    return both.json("POST", PATH, {"parameters": {"request_id": request_id},
                                    "inputs": [{"name": "label", "datatype": "INT64", "shape": [len(labels)],
                                                "data": labels}]})


def test_text_feedback_over_every_wire_is_stored_as_sent(both):
    sent: list[str] = []
    doc = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": ["great movie", "Ünïcödé 🙂"]},
                      {"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 0]}]}
    status, body = both.json("POST", PATH, doc)
    assert status == 200 and body["samples"] == 2, body
    sent += ["great movie", "Ünïcödé 🙂"]

    status, body = _binary_feedback(both, ["boring boring", "", "日本語"], [0, 0, 1])
    assert status == 200 and body["samples"] == 3, body
    sent += ["boring boring", "", "日本語"]

    texts = np.array([["I loved it"], ["worst plot"]], dtype=object)
    grpc_text = grpcclient.InferInput("text", [2, 1], "BYTES")
    grpc_text.set_data_from_numpy(texts)
    with contextlib.closing(both.grpc()) as client:
        client.infer(MODEL, [grpc_text], request_id="grpc-text-1")
    status, body = _label_only(both, "grpc-text-1", [1, 0])
    assert status == 200 and body["answered_by_version"] == "1", body
    sent += ["I loved it", "worst plot"]

    http_text = httpclient.InferInput("text", [1, 1], "BYTES")
    http_text.set_data_from_numpy(np.array([["what a FILM!"]], dtype=object), binary_data=True)
    with contextlib.closing(both.http()) as client:
        client.infer(MODEL, [http_text], request_id="http-text-1")
    status, body = _label_only(both, "http-text-1", [1])
    assert status == 200 and body["samples"] == 1, body
    sent.append("what a FILM!")

    stored = _stored(both)
    assert stored.quarantined == 0 and stored.records == 4
    assert stored.inputs["text"].shape == (8, 1) and stored.inputs["text"].dtype == object
    assert stored.inputs["text"].ravel().tolist() == sent
    assert stored.labels.tolist() == [1, 0, 0, 0, 1, 1, 0, 1]
    np.testing.assert_array_equal(stored.sequences, np.arange(1, 9))


def test_text_that_is_not_utf8_is_a_400_and_stores_nothing(both):
    before = len(_stored(both))
    status, body = _binary_feedback(both, [b"caf\xe9"], [1])
    assert status == 400 and "input 'text'" in body["error"] and "UTF-8" in body["error"], body
    status, body = _binary_feedback(both, ["ends in NUL\x00"], [1])
    assert status == 400 and "NUL" in body["error"], body
    assert len(_stored(both)) == before


def test_a_text_record_that_does_not_decode_is_quarantined_and_counted(both):
    good = len(_stored(both))
    store = feedback_dir(both.gateway.repo.root, MODEL)
    with open(sorted(store.glob("shard-*.tgfb"))[-1], "ab") as f:  # what a bug could have written
        f.write(_record_with_raw_text(b"\xff\xfe", 10_000))
    stored = _stored(both)
    assert stored.quarantined == 1 and len(stored) == good and "not UTF-8" in stored.quarantine_reasons[0]
    status, body = both.json("POST", PATH, {"inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": ["after the damage"]},
        {"name": "label", "datatype": "INT64", "shape": [1], "data": [1]}]})
    assert status == 200, body
    stored = _stored(both)
    assert len(stored) == good + 1 and stored.inputs["text"][-1, 0] == "after the damage"

    def exported() -> bool:
        metrics = both.request("GET", "/metrics")[2].decode()
        return f'tunegate_feedback_quarantined_total{{model="{MODEL}"}} 1.0' in metrics

    wait_for(exported, what="the quarantined text record in /metrics")


def test_a_captured_text_request_reads_back_from_its_segment_without_pickle():
    """What another process or a restarted gateway reads of a capture (not this one's memory)."""
    from gateway.loop.capture_log import Captured, decode, encode

    texts = np.array([["Ünïcödé"], [b"bytes sent"], [""]], dtype=object)
    record = encode("r1", Captured(1, {"text": texts}, np.array([1, 0, 1]), 0))
    assert b"\x80\x04" not in record and b"'|O'" not in record
    request_id, item = decode(record[8:])
    assert request_id == "r1" and item.inputs["text"].ravel().tolist() == ["Ünïcödé", "bytes sent", ""]
    assert item.nbytes == len("Ünïcödé") + len("bytes sent")
