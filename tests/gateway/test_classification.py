"""Triton's classification extension through the unmodified tritonclient (HTTP JSON, HTTP
binary, gRPC): ``InferRequestedOutput(name, class_count=N)`` answers BYTES
``"<value>:<index>[:<label>]"``, the top N of each row, labels from ``label_filename``."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from gateway.core.classification import classify
from model_repo import Repository
from model_repo.config import LABELS_FILE, write_labels

from . import models
from .grpc_fixture import both_settings, serve_both

X = np.array([[0.5, -1.0, 2.0, 0.25], [3.0, 1.0, -2.0, 0.0]], np.float32)
LABELS = ["cat", "", "bird"]  # class 1 has an empty line: no label, as in Triton


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("classification_repo")
    repo = Repository(root)
    models.publish(repo, "scores", models.mlp_fp32(), models.mlp_config("scores"))
    labelled = models.mlp_config("labelled")
    labelled.output[0].label_filename = LABELS_FILE
    models.publish(repo, "labelled", models.mlp_fp32(), labelled)
    write_labels(repo.model_dir("labelled"), LABELS_FILE, LABELS)
    models.publish(repo, "int64", models.int64_model(), models.int64_config("int64"))
    models.publish(repo, "bools", models.bool_model(), models.bool_config("bools"))
    with serve_both(both_settings(root)) as server:
        yield server


def triton_format(row: np.ndarray, count: int, labels=None) -> list[bytes]:
    """Triton's TopkClassifications, written out: highest first, std::to_string's %f / %d."""
    order = sorted(range(row.size), key=lambda i: -float(row[i]))[:count]
    out = []
    for i in order:
        text = ("%f" % float(row[i]) if row.dtype.kind == "f" else "%d" % int(row[i])) + f":{i}"
        if labels and i < len(labels) and labels[i]:
            text += f":{labels[i]}"
        out.append(text.encode())
    return out


def run(both, protocol: str, model: str, x: np.ndarray, output: str, count: int, datatype: str = "FP32"):
    if protocol == "grpc":
        lib, client = grpcclient, both.grpc()
        requested = lib.InferRequestedOutput(output, class_count=count)
    else:
        lib, client = httpclient, both.http()
        requested = lib.InferRequestedOutput(output, binary_data=protocol == "http-binary", class_count=count)
    with contextlib.closing(client):
        inp = lib.InferInput("X", list(x.shape), datatype)
        inp.set_data_from_numpy(x)
        result = client.infer(model, [inp], outputs=[requested])
        answer = result.as_numpy(output)
    return np.vectorize(lambda v: v if isinstance(v, bytes) else str(v).encode(), otypes=[object])(answer)


def raw_scores(both, x: np.ndarray) -> np.ndarray:
    with contextlib.closing(both.http()) as client:
        inp = httpclient.InferInput("X", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return client.infer("scores", [inp]).as_numpy("OUT")


@pytest.mark.parametrize("protocol", ["http-json", "http-binary", "grpc"])
def test_top_k_without_labels_matches_tritons_format(both, protocol):
    scores = raw_scores(both, X)
    answer = run(both, protocol, "scores", X, "OUT", 2)
    assert answer.shape == (2, 2)
    assert [list(row) for row in answer] == [triton_format(row, 2) for row in scores]


@pytest.mark.parametrize("protocol", ["http-json", "grpc"])
def test_top_k_with_labels_from_the_label_file(both, protocol):
    scores = raw_scores(both, X)
    answer = run(both, protocol, "labelled", X, "OUT", 3)
    assert [list(row) for row in answer] == [triton_format(row, 3, LABELS) for row in scores]
    assert any(item.endswith((b":cat", b":bird")) for item in answer.reshape(-1))


@pytest.mark.parametrize("protocol", ["http-json", "grpc"])
def test_integers_print_as_integers_and_the_count_is_clamped(both, protocol):
    x = np.array([[1, 5, 3]], np.int64)  # Y = 3x + 1 = [4, 16, 10]
    answer = run(both, protocol, "int64", x, "Y", 10, "INT64")
    assert answer.tolist() == [[b"16:1", b"10:2", b"4:0"]]


@pytest.mark.parametrize("protocol", ["http-json", "grpc"])
def test_a_type_without_an_order_is_refused_before_running(both, protocol):
    lib = grpcclient if protocol == "grpc" else httpclient
    client = both.grpc() if protocol == "grpc" else both.http()
    with contextlib.closing(client):
        inputs = [lib.InferInput(n, [1, 2], "BOOL") for n in ("A", "B")]
        for inp in inputs:
            inp.set_data_from_numpy(np.array([[True, False]]))
        with pytest.raises(InferenceServerException, match="unsupported type 'BOOL'"):
            client.infer("bools", inputs, outputs=[lib.InferRequestedOutput("BOTH", class_count=1)])


def test_a_bad_class_count_is_a_bad_request(both):
    doc = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}],
           "outputs": [{"name": "OUT", "parameters": {"classification": "two"}}]}
    status, body = both.json("POST", "/v2/models/scores/infer", doc)
    assert status == 400 and "classification" in body["error"]


def test_classification_is_advertised(both):
    with contextlib.closing(both.http()) as client:
        assert "classification" in client.get_server_metadata()["extensions"]


def test_classify_known_answers():
    ties = np.array([[1.0, 3.0, 3.0, 0.5]], np.float32)
    assert classify(ties, 3, batched=True).tolist() == [[b"3.000000:1", b"3.000000:2", b"1.000000:0"]]
    unbatched = np.array([[2, 9], [7, 1]], np.uint8)  # one tensor: indices run over all of it
    assert classify(unbatched, 2, batched=False, labels=["a", "b", "c"]).tolist() == [b"9:1:b", b"7:2:c"]
    assert classify(np.zeros((0, 3), np.float32), 2, batched=True).shape == (0, 2)
