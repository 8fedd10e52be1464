"""Models that take raw text and raw columns (issue 25), converted by tunegate and served by
a real gateway: BYTES inputs over HTTP JSON, HTTP binary and gRPC through the unmodified
tritonclient answer as Keras does."""

from __future__ import annotations

import concurrent.futures
import contextlib

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from converters import publish_keras_model
from model_repo import Repository
from tests.converters import preprocessing_models as pm

from .grpc_fixture import both_settings, serve_both

MODELS = {
    "sentiment": (pm.sentiment, pm.text_rows),
    "characters": (lambda: pm.sentiment(split="character", length=24), pm.text_rows),
    "bag_of_words": (pm.bag_of_words, pm.text_rows),
    "structured": (pm.structured, pm.structured_rows),
}
DTYPES = {"numbers": "FP32", "color": "BYTES", "size": "INT64", "text": "BYTES"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Each model converted (parity checked) and published, its Keras answers kept; then both
    front ends over the repository. The cached copy of the sentiment model uses Triton's
    response cache."""
    root = tmp_path_factory.mktemp("string_repo")
    repo = Repository(root)
    answers = {}
    for name, (build, rows) in MODELS.items():
        model = build()
        manifest = publish_keras_model(model, repo, name)
        assert manifest.parity["passed"] and manifest.extra.get("custom_ops") == (
            None if name == "structured" else ["onnxruntime_extensions"])
        answers[name] = (rows(), pm.keras_answers(model, rows()))
    publish_keras_model(pm.sentiment(), repo, "sentiment_cached")
    config = repo.read_config("sentiment_cached")
    config.response_cache.enable = True
    repo.write_config("sentiment_cached", config)
    with serve_both(both_settings(root, response_cache_bytes=1 << 20)) as server:
        yield server, answers


def _http_inputs(feeds: dict[str, np.ndarray], binary: bool):
    inputs = []
    for name, array in feeds.items():
        tensor = httpclient.InferInput(name, list(array.shape), DTYPES[name])
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def _grpc_inputs(feeds: dict[str, np.ndarray]):
    inputs = []
    for name, array in feeds.items():
        tensor = grpcclient.InferInput(name, list(array.shape), DTYPES[name])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _output(model: str) -> str:
    return "class_probs" if model == "structured" else "probs"


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("wire", ["json", "binary", "grpc"])
def test_answers_equal_keras(served, model, wire):
    server, answers = served
    feeds, expected = answers[model]
    if wire == "grpc":
        with contextlib.closing(server.grpc()) as client:
            got = client.infer(model, _grpc_inputs(feeds)).as_numpy(_output(model))
    else:
        with contextlib.closing(server.http()) as client:
            outputs = [httpclient.InferRequestedOutput(_output(model), binary_data=wire == "binary")]
            got = client.infer(model, _http_inputs(feeds, wire == "binary"), outputs=outputs).as_numpy(_output(model))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_metadata_says_bytes(served):
    server, _ = served
    with contextlib.closing(server.http()) as client:
        meta = client.get_model_metadata("structured")
        config = client.get_model_config("sentiment")
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {"numbers": "FP32", "color": "BYTES", "size": "INT64"}
    assert config["parameters"]["custom_op_library"]["string_value"] == "onnxruntime_extensions"


def test_text_that_is_not_utf8_is_a_400(served):
    server, _ = served
    bad = np.array([[b"caf\xe9"]], dtype=object)  # Latin-1, not UTF-8
    with contextlib.closing(server.http()) as client, pytest.raises(InferenceServerException) as http_error:
        client.infer("sentiment", _http_inputs({"text": bad}, binary=True))
    assert "400" in str(http_error.value.status()) and "UTF-8" in str(http_error.value)
    with contextlib.closing(server.grpc()) as client, pytest.raises(InferenceServerException) as grpc_error:
        client.infer("sentiment", _grpc_inputs({"text": bad}))
    assert "INVALID_ARGUMENT" in str(grpc_error.value.status()) and "UTF-8" in str(grpc_error.value)


def test_concurrent_requests_batch_and_answer_alike(served):
    """Rows sent one by one at once (merged by the batcher) answer as the batch does."""
    server, answers = served
    feeds, expected = answers["sentiment"]

    def one(i: int) -> np.ndarray:
        with contextlib.closing(server.http()) as client:
            return client.infer("sentiment", _http_inputs({"text": feeds["text"][i:i + 1]}, True)).as_numpy("probs")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(one, range(len(feeds["text"]))))
    np.testing.assert_allclose(np.concatenate(rows), expected, rtol=1e-5, atol=1e-6)


def test_the_response_cache_answers_text_requests(served):
    server, answers = served
    feeds, expected = answers["sentiment"]
    with contextlib.closing(server.http()) as client:
        first = client.infer("sentiment_cached", _http_inputs(feeds, True)).as_numpy("probs")
        second = client.infer("sentiment_cached", _http_inputs(feeds, False)).as_numpy("probs")
        stats = client.get_inference_statistics("sentiment_cached")["model_stats"][0]["inference_stats"]
    np.testing.assert_allclose(first, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(first, second)
    assert int(stats["cache_hit"]["count"]) >= 1


def test_drift_is_not_measured_on_text_and_says_so(tmp_path):
    """A reference summary that points at a text input (numbers cannot describe text) turns
    drift monitoring off for the model, said in its metadata; requests are answered."""
    from model_repo.drift import summarise

    from .conftest import make_settings, serve, wait_for

    repo = Repository(tmp_path / "repo")
    model = pm.sentiment()
    publish_keras_model(model, repo, "sentiment", manifest_fields={
        "input_summary": summarise(np.zeros((64, 1)), input="text").to_dict()})
    with serve(make_settings(repo.root)) as server, contextlib.closing(server.client()) as client:
        feeds = pm.text_rows()
        got = client.infer("sentiment", _http_inputs(feeds, True)).as_numpy("probs")
        np.testing.assert_allclose(got, pm.keras_answers(model, feeds), rtol=1e-5, atol=1e-6)
        drift = wait_for(lambda: client.get_model_metadata("sentiment")["parameters"].get("drift"),
                         what="the drift monitor's verdict")
    assert "is text (BYTES): drift is measured on numeric inputs only" in drift["error"]


def test_a_raw_binary_request_is_one_text(served):
    """Triton's raw binary request (no JSON header): the whole body is the one text."""
    import json

    server, answers = served
    feeds, expected = answers["sentiment"]
    status, headers, body = server.request("POST", "/v2/models/sentiment/infer", feeds["text"][0, 0].encode(),
                                           {"Inference-Header-Content-Length": "0"})
    assert status == 200, body
    length = int(headers["Inference-Header-Content-Length"])
    header = json.loads(body[:length])
    assert header["outputs"][0]["shape"] == [1, 2]
    np.testing.assert_allclose(np.frombuffer(body[length:], np.float32), expected[0], rtol=1e-5, atol=1e-6)
