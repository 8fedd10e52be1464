"""The binary and JSON codecs agree with tritonclient on every v2 datatype numpy holds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.http._utils import _get_inference_request

from gateway.core.errors import BadRequest
from gateway.core.signature import Signature, TensorMeta
from gateway.core.types import InferResponse
from gateway.http.codec import decode_request, encode_response

from .models import DATATYPE_CASES as CASES


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", list(CASES))
def test_round_trip_with_tritonclient(datatype, binary):
    array = CASES[datatype]
    if datatype == "BYTES" and not binary:
        array = np.array([[b"", b"plain", "héllo".encode()]], dtype=object)  # JSON carries text only
    tensor = triton.InferInput("T", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    body, header_length = _get_inference_request([tensor], "", [triton.InferRequestedOutput("T", binary)],
                                                 0, False, False, 0, None, None)
    request = decode_request(body, header_length, max_elements=1000)
    decoded = request.inputs[0].data
    assert decoded.shape == array.shape and request.outputs[0].binary is binary
    assert decoded.tolist() == array.tolist()

    payload, json_length = encode_response(InferResponse("m", "1", [("T", decoded, binary)]))
    result = triton.InferResult.from_response_body(payload, header_length=json_length)
    answer = result.as_numpy("T")
    if datatype == "BYTES" and not binary:  # tritonclient hands JSON text back as str
        answer = np.vectorize(str.encode, otypes=[object])(answer)
    assert answer.tolist() == array.tolist()
    assert answer.dtype == (array.dtype if datatype != "BYTES" else object)


def test_json_rejects_values_that_do_not_fit():
    for datatype, data in [("INT64", [1.5]), ("UINT8", [256]), ("BOOL", [1]), ("FP32", ["x"]),
                           ("INT64", [1, True]), ("FP32", [[0.5], [False]]), ("INT8", [[-129]]),
                           ("UINT64", [-1]), ("UINT64", [2**64]), ("INT32", [None]), ("FP64", [{"a": 1}])]:
        doc = {"inputs": [{"name": "T", "shape": [1], "datatype": datatype, "data": data}]}
        with pytest.raises(Exception) as info:
            decode_request(json.dumps(doc).encode(), None, max_elements=10)
        assert getattr(info.value, "status", None) == 400, (datatype, info.value)


def test_json_numbers_take_any_nesting_the_shape_allows():
    for data in ([[1, 2], [3, 4]], [1, 2, 3, 4], [[1, 2], [3], [4]], [[[1]], [[2]], [[3]], [[4]]]):
        doc = {"inputs": [{"name": "T", "shape": [2, 2], "datatype": "INT16", "data": data}]}
        decoded = decode_request(json.dumps(doc).encode(), None, max_elements=10).inputs[0].data
        assert decoded.dtype == np.int16 and decoded.tolist() == [[1, 2], [3, 4]]
    doc = {"inputs": [{"name": "T", "shape": [2], "datatype": "UINT64", "data": [0, 2**64 - 1]}]}
    assert decode_request(json.dumps(doc).encode(), None, max_elements=10).inputs[0].data.tolist() == [0, 2**64 - 1]


def _signature(width: int) -> Signature:
    return Signature((TensorMeta("X", "FP32", (width,)),), (TensorMeta("Y", "FP32", (1,)),), max_batch_size=4)


def test_inputs_are_checked_once_against_the_signature_they_were_decoded_for():
    body = json.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 3], "data": list(range(6))}]})
    decoded_for = _signature(3)
    request = decode_request(body.encode(), None, max_elements=1 << 20, spec=decoded_for)
    assert request.checked is decoded_for
    feeds, rows = decoded_for.check(request)
    assert rows == 2 and feeds["X"].shape == (2, 3)
    # Routed to another version (a canary with another signature): its own check runs in full.
    with pytest.raises(BadRequest, match="shape"):
        _signature(4).check(request)


def test_one_scan_prices_the_json_and_finds_every_boolean_literal():
    from gateway.core.budget import json_cost, scan_json

    numbers = json.dumps({"inputs": [{"name": "X", "data": [1.5, 2e-05, 3]}]}).encode()
    cost, maybe = scan_json(numbers)
    assert cost == json_cost(numbers) and not maybe
    for literal in (b"true", b"false"):
        assert scan_json(numbers.replace(b"3]", literal + b"]"))[1]
    # A refusal the scan makes possible: a boolean among FP32 numbers is not a number.
    body = json.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [2], "data": [1.0, True]}]})
    with pytest.raises(BadRequest, match="bool"):
        decode_request(body.encode(), None, max_elements=100)


def test_variable_dimensions_take_any_size_and_fixed_ones_only_theirs():
    signature = Signature((TensorMeta("X", "FP32", (-1, 3)),), (TensorMeta("Y", "FP32", (1,)),), max_batch_size=4)
    signature.check_input("X", "FP32", [2, 5, 3])
    signature.check_input("X", "FP32", (1, 1, 3))
    for shape in ([2, 5, 4], [2, 5], [2, 5, 3, 1], [5, 1, 3]):
        with pytest.raises(BadRequest):
            signature.check_input("X", "FP32", shape)
