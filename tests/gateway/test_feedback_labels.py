"""Feedback labels are checked against the model and stored in one form, so no feedback can
poison the store (issue 11); capture works for a model that does not batch, and a failed
feedback leaves the capture for a retry; the store's quarantine is exported as a metric."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from gateway.loop.capture import Captured, captured_feeds
from gateway.core.errors import BadRequest
from gateway.loop.labels import LabelSpec, check_labels, expect_label, label_spec
from gateway.loop.settings import LoopSettings
from gateway.core.signature import Signature, TensorMeta
from model_repo import Repository, TensorSpec, make_config
from model_repo.feedback import FeedbackWriter, feedback_dir, read_feedback

from . import loop_models
from .conftest import API_KEY, make_settings, serve, wait_for
from .models import _save
from .models import publish as publish_model

KEY = {"X-API-Key": API_KEY}


def _unbatched_classifier() -> bytes:
    """X [4] -> P [3] = X[:3]: a classifier that takes one example, no batch dimension."""
    w = numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["P"])], "solo",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("P", TensorProto.FLOAT, [3])], [w])
    return _save(graph)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    repo = Repository(root)
    loop_models.publish(repo, "clf", loop_models.classifier())
    loop_models.publish(repo, "onehot", loop_models.classifier())
    publish_model(repo, "solo", _unbatched_classifier(),
                  make_config("solo", [TensorSpec("X", "FP32", (4,))], [TensorSpec("P", "FP32", (3,))],
                              max_batch_size=0))
    settings = make_settings(root, api_key=API_KEY, loop={"capture": True},
                             loop_models={"onehot": {"label_kind": "target"}})
    with serve(settings) as server:
        yield server


def _label(datatype: str, shape: list[int], data) -> dict:
    return {"name": "label", "datatype": datatype, "shape": shape, "data": data}


def _x(rows: int, value: float = 0.0) -> dict:
    return {"name": "X", "datatype": "FP32", "shape": [rows, 4], "data": [value] * (4 * rows)}


def _feedback(server, model: str, *inputs: dict, **parameters) -> tuple[int, dict]:
    doc = {"inputs": list(inputs)}
    if parameters:
        doc["parameters"] = parameters
    return server.json("POST", f"/v2/models/{model}/feedback", doc, KEY)


def _binary_feedback(server, model: str, x: np.ndarray, labels: np.ndarray) -> tuple[int, dict]:
    inputs = []
    for name, array in (("X", x), ("label", labels)):
        tensor = triton.InferInput(name, list(array.shape), triton.np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    raw, json_size = triton.InferenceServerClient.generate_request_body(inputs)
    status, _, body = server.request("POST", f"/v2/models/{model}/feedback", raw,
                                     {**KEY, "Inference-Header-Content-Length": str(json_size)})
    return status, json.loads(body)


def _stored(server, model: str):
    return read_feedback(feedback_dir(server.repo.root, model))


def test_two_label_forms_can_no_longer_poison_the_store(server):
    # Issue 11: INT64 [1] then FP32 [1, 3] were both accepted, and every read failed after.
    assert _feedback(server, "clf", _x(1, 1.0), _label("INT64", [1], [1]))[0] == 200
    status, body = _feedback(server, "clf", _x(1, 2.0), _label("FP32", [1, 3], [0, 0, 1]))
    assert status == 400
    assert "datatype FP32" in body["error"] and "class ids" in body["error"] and "0 to 2" in body["error"]
    # Any integer type and [rows, 1] are accepted, and stored as int64 [rows].
    assert _feedback(server, "clf", _x(2, 3.0), _label("INT32", [2, 1], [2, 0]))[0] == 200
    assert _feedback(server, "clf", _x(1, 4.0), _label("UINT8", [1], [1]))[0] == 200
    stored = _stored(server, "clf")
    assert stored.quarantined == 0 and stored.labels.dtype == np.int64
    assert stored.labels.tolist() == [1, 2, 0, 1] and stored.inputs["X"][:, 0].tolist() == [1, 3, 3, 4]


@pytest.mark.parametrize("label,message", [
    (_label("INT64", [1, 0], []), "shape [1, 0]"),
    (_label("INT64", [0], []), "shape [0]"),
    (_label("INT64", [], 1), "shape []"),
    (_label("INT64", [1, 2], [1, 1]), "shape [1, 2]"),
    (_label("INT64", [1], [-1]), "label -1 (row 0) is no class id"),
    (_label("INT64", [1], [3]), "label 3 (row 0)"),
    (_label("INT64", [1], [10 ** 18]), "label 1000000000000000000"),
    (_label("UINT64", [1], [2 ** 63]), "is no class id"),
    (_label("FP32", [1], [1.0]), "datatype FP32"),
    (_label("FP64", [1], [0.5]), "datatype FP64"),
    (_label("BOOL", [1], [True]), "datatype BOOL"),
    (_label("BYTES", [1], ["1"]), "datatype BYTES"),
])
def test_labels_that_do_not_fit_the_model_are_refused_with_what_was_expected(server, label, message):
    before = len(_stored(server, "clf"))
    status, body = _feedback(server, "clf", _x(1), label)
    assert status == 400, body
    assert message in body["error"] and "expected class ids" in body["error"]
    assert len(_stored(server, "clf")) == before


def test_target_labels_are_finite_vectors_shaped_like_the_output_row(server):
    assert _feedback(server, "onehot", _x(2), _label("FP32", [2, 3], [0, 1, 0, 1, 0, 0]))[0] == 200
    assert _feedback(server, "onehot", _x(1), _label("INT64", [1, 3], [0, 0, 1]))[0] == 200
    for bad, message in [(np.array([[0, np.nan, 1]], np.float32), "not finite"),  # binary: JSON has no NaN
                         (np.array([[0, np.inf, 1]], np.float32), "not finite"),
                         (np.array([[0, 1e39, 1]], np.float64), "not finite"),
                         (np.array([1], np.int64), "shape [1]"),
                         (np.array([[0, 0, 0, 1]], np.float32), "shape [1, 4]")]:
        status, body = _binary_feedback(server, "onehot", np.zeros((1, 4), np.float32), bad)
        assert status == 400 and message in body["error"] and "[1, 3]" in body["error"], body
    stored = _stored(server, "onehot")
    assert stored.labels.dtype == np.float32 and stored.labels.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1]]


def test_capture_on_a_model_that_does_not_batch(server):
    # Issue 11: the unbatched input's first dimension was taken as rows ("1 rows but the
    # inputs have 4"), and the failed call used the capture up.
    def infer(request_id: str, x: list[float]) -> None:
        status, _, body = server.request("POST", "/v2/models/solo/infer", json.dumps(
            {"inputs": [{"name": "X", "datatype": "FP32", "shape": [4], "data": x}]}).encode(),
            {"Content-Type": "application/json", "X-Request-ID": request_id})
        assert status == 200, body

    infer("r1", [0, 1, 0, 0])
    two_labels = _label("INT64", [2], [1, 1])
    # Captured on another thread: poll until the refusal names the capture.
    wait_for(lambda: "has 1" in _feedback(server, "solo", two_labels, request_id="r1")[1]["error"],
             what="the capture of r1")
    status, body = _feedback(server, "solo", two_labels, request_id="r1")
    assert status == 400 and "2 rows but the captured request 'r1' has 1" in body["error"]
    status, body = _feedback(server, "solo", _label("INT64", [1], [5]), request_id="r1")
    assert status == 400 and "is no class id" in body["error"]
    status, body = _feedback(server, "solo", _label("INT64", [1], [1]), request_id="r1")
    assert status == 200 and body == {"model_name": "solo", "samples": 1, "answered_by_version": "1"}
    status, body = _feedback(server, "solo", _label("INT64", [1], [1]), request_id="r1")
    assert status == 409 and "'r1' of model 'solo' is already labelled" in body["error"]
    # Sent with its inputs, an unbatched example is stored the same way: one row.
    status, body = _feedback(server, "solo", {"name": "X", "datatype": "FP32", "shape": [4], "data": [0, 0, 7, 0]},
                             _label("INT64", [1, 1], [2]))
    assert status == 200, body
    stored = _stored(server, "solo")
    assert stored.quarantined == 0 and stored.labels.tolist() == [1, 2]
    np.testing.assert_array_equal(stored.inputs["X"], [[0, 1, 0, 0], [0, 0, 7, 0]])
    metrics = server.request("GET", "/metrics")[2].decode()
    assert 'tunegate_feedback_labelled_answers{model="solo"} 1.0' in metrics  # its answer was scored


def test_a_failed_feedback_leaves_the_capture_for_a_retry(server):
    client = server.client()
    x = triton.InferInput("X", [2, 4], "FP32")
    x.set_data_from_numpy(np.array([[9, 0, 0, 0], [0, 9, 0, 0]], np.float32))
    client.infer("clf", [x], request_id="q1")
    one_label = _label("INT64", [1], [0])
    wait_for(lambda: "has 2" in _feedback(server, "clf", one_label, request_id="q1")[1]["error"],
             what="the capture of q1")
    status, body = _feedback(server, "clf", one_label, request_id="q1")
    assert status == 400 and "1 rows but the captured request 'q1' has 2" in body["error"]
    status, body = _feedback(server, "clf", _label("INT64", [2], [0, -1]), request_id="q1")
    assert status == 400 and "no class id" in body["error"]
    status, body = _feedback(server, "clf", _label("INT64", [2], [0, 1]), request_id="q1")
    assert status == 200 and body["samples"] == 2
    assert _stored(server, "clf").inputs["X"][-2:, 0].tolist() == [9, 0]


def test_a_record_written_into_the_store_directly_is_quarantined_and_counted(server):
    store = feedback_dir(server.repo.root, "clf")
    with FeedbackWriter(store) as writer:  # what an older gateway, or a bug, could have written
        writer.append({"X": np.zeros((1, 4), np.float32)}, np.zeros((1, 3), np.float32))
    good = len(_stored(server, "clf"))
    stored = _stored(server, "clf")
    assert stored.quarantined == 1 and len(stored) == good

    def exported() -> bool:
        metrics = server.request("GET", "/metrics")[2].decode()
        return 'tunegate_feedback_quarantined_total{model="clf"} 1.0' in metrics

    wait_for(exported, what="the quarantined record in /metrics")  # scanned in the background
    assert 'tunegate_feedback_quarantined_total{model="solo"} 0.0' in server.request("GET", "/metrics")[2].decode()


# ------------------------------------------------------------------ the spec itself
def _signature(output_dims: tuple[int, ...], datatype: str = "FP32", batch: int = 8) -> Signature:
    return Signature((TensorMeta("X", "FP32", (4,)),), (TensorMeta("Y", datatype, output_dims),), batch)


@pytest.mark.parametrize("signature,loop,spec", [
    (_signature((3,)), {}, LabelSpec("class", (), 3)),
    (_signature((3,), batch=0), {}, LabelSpec("class", (), 3)),
    (_signature((1,)), {}, LabelSpec("target", ())),
    (_signature((3,), "INT64"), {}, LabelSpec("target", (3,))),
    (_signature((2, 2)), {}, LabelSpec("target", (2, 2))),
    (_signature((3,)), {"label_kind": "target"}, LabelSpec("target", (3,))),
    (_signature((-1,)), {"num_classes": 7}, LabelSpec("class", (), 7)),
    (_signature((-1,)), {"label_shape": [5]}, LabelSpec("target", (5,))),
    (_signature((10,)), {"num_classes": 4}, LabelSpec("class", (), 4)),
    (_signature((1,)), {"label_shape": []}, LabelSpec("target", ())),
])
def test_the_spec_comes_from_the_output_unless_the_settings_say_otherwise(signature, loop, spec):
    assert label_spec(signature, LoopSettings(**loop)) == spec


@pytest.mark.parametrize("signature,loop", [(_signature((-1,)), {}), (_signature((1,)), {"label_kind": "class"})])
def test_a_spec_that_cannot_be_derived_says_which_setting_to_set(signature, loop):
    with pytest.raises(BadRequest, match="num_classes|label_shape"):
        label_spec(signature, LoopSettings(**loop))


def test_conflicting_label_settings_are_refused_when_loaded():
    with pytest.raises(ValueError, match="num_classes is for class labels"):
        LoopSettings(num_classes=3, label_shape=[3])
    with pytest.raises(ValueError, match="label_shape is for target labels"):
        LoopSettings(label_kind="class", label_shape=[3])


def test_expect_label_checks_the_header_before_any_data():
    spec = LabelSpec("class", (), 3)
    expect_label(spec, "INT16", [4, 1], 4)
    expect_label(spec, "INT64", [4], None)
    for datatype, shape, rows, message in [("FP32", [4], 4, "datatype FP32"), ("INT64", [4, 2], 4, "shape"),
                                           ("INT64", [3], 4, "3 rows but the inputs have 4"),
                                           ("INT64", [0], None, "shape [0]")]:
        with pytest.raises(BadRequest, match=re.escape(message)):
            expect_label(spec, datatype, shape, rows)


class _Tensor:
    def __init__(self, datatype: str, data: np.ndarray) -> None:
        self.datatype, self.shape, self.data = datatype, tuple(data.shape), data


_DTYPES = {"INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64, "UINT64": np.uint64,
           "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}


@settings(max_examples=300, deadline=None, derandomize=True)
@given(datatype=st.sampled_from(sorted(_DTYPES)), kind=st.sampled_from(["class", "target"]),
       rows=st.integers(1, 4), width=st.sampled_from([None, 1, 3]),
       values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64) | st.integers(-2**70, 2**70),
                       min_size=12, max_size=12))
def test_check_labels_accepts_only_the_stored_form_or_says_no(datatype, kind, rows, width, values):
    spec = LabelSpec("class", (), 3) if kind == "class" else LabelSpec("target", (3,))
    shape = (rows,) if width is None else (rows, width)
    count = int(np.prod(shape))
    with np.errstate(all="ignore"):
        raw = np.array([v if isinstance(v, float) else float(v) for v in values[:count]], np.float64)
        data = raw.astype(_DTYPES[datatype]).reshape(shape)
    try:
        labels = check_labels(spec, _Tensor(datatype, data))
    except BadRequest as exc:
        assert "expected" in exc.message
        return
    if kind == "class":
        assert labels.dtype == np.int64 and labels.shape == (rows,)
        assert ((labels >= 0) & (labels < 3)).all()
    else:
        assert labels.dtype == np.float32 and labels.shape == (rows, 3) and np.isfinite(labels).all()


def test_captured_inputs_become_stored_rows_checked_against_the_model_as_it_is_now():
    unbatched = Signature((TensorMeta("X", "FP32", (4,)),), (TensorMeta("P", "FP32", (3,)),), 0)
    # A capture log written before the fix holds an unbatched example without its row axis.
    old = Captured(1, {"X": np.arange(4, dtype=np.float64)}, None, 32)
    feeds = captured_feeds(unbatched, old)
    assert feeds["X"].shape == (1, 4) and feeds["X"].dtype == np.float32
    batched = _signature((3,))
    with pytest.raises(BadRequest, match="does not fit"):
        captured_feeds(batched, Captured(1, {"X": np.zeros((2, 5), np.float32)}, None, 40))
    with pytest.raises(BadRequest, match="no input 'X'"):
        captured_feeds(batched, Captured(1, {"Z": np.zeros((2, 4), np.float32)}, None, 32))
