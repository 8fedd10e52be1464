"""The gRPC codec agrees with tritonclient.grpc on every v2 datatype numpy holds (raw
contents, as the client sends them), decodes typed contents, and refuses what does not fit."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc._utils import _get_inference_request

from gateway.core.budget import MemoryBudget
from gateway.core.errors import BadRequest, PayloadTooLarge
from gateway.core.signature import Signature
from gateway.core.types import InferResponse
from gateway.grpc.codec import decode_request, encode_response
from model_repo import TensorSpec, make_config

from .grpc_fixture import CASES


def _request(array: np.ndarray, datatype: str) -> pb.ModelInferRequest:
    tensor = triton.InferInput("T", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return _get_inference_request("m", [tensor], "", "id-1", [triton.InferRequestedOutput("T")],
                                  0, False, False, 0, None, {"flag": True, "n": 3, "s": "x"})


@pytest.mark.parametrize("datatype", list(CASES))
def test_round_trip_with_tritonclient(datatype):
    array = CASES[datatype]
    request = decode_request(_request(array, datatype), max_elements=1000)
    decoded = request.inputs[0].data
    assert decoded.shape == array.shape and request.inputs[0].datatype == datatype
    assert decoded.tolist() == array.tolist()
    assert request.id == "id-1" and [o.name for o in request.outputs] == ["T"]
    assert request.parameters == {"flag": True, "n": 3, "s": "x"}

    message = encode_response(InferResponse("m", "1", [("T", decoded, True)], id="id-1"))
    answer = triton.InferResult(message).as_numpy("T")
    assert answer.dtype == (array.dtype if datatype != "BYTES" else object)
    assert answer.tolist() == array.tolist()
    assert message.id == "id-1" and message.outputs[0].datatype == datatype


TYPED = {  # datatype -> (contents field, values)
    "BOOL": ("bool_contents", [True, False, True]), "INT8": ("int_contents", [-128, 0, 127]),
    "INT16": ("int_contents", [-3, 0, 3]), "INT32": ("int_contents", [-(2**31), 0, 5]),
    "INT64": ("int64_contents", [-(2**63), 0, 2**62]), "UINT8": ("uint_contents", [0, 7, 255]),
    "UINT16": ("uint_contents", [0, 65535, 3]), "UINT32": ("uint_contents", [1, 2**32 - 1, 0]),
    "UINT64": ("uint64_contents", [1, 2**64 - 1, 0]), "FP32": ("fp32_contents", [0.5, -2.5, 2.0**127]),
    "FP64": ("fp64_contents", [0.1, -2.5, 1e300]), "BYTES": ("bytes_contents", [b"", b"\x00\xff", b"abc"]),
}


def _typed(datatype: str, field: str, values, shape=(1, 3)) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="T", datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return request


@pytest.mark.parametrize("datatype", list(TYPED))
def test_typed_contents(datatype):
    field, values = TYPED[datatype]
    decoded = decode_request(_typed(datatype, field, values), max_elements=1000).inputs[0].data
    assert decoded.shape == (1, 3) and decoded.reshape(-1).tolist() == values
    if datatype != "BYTES":
        assert decoded.dtype == CASES[datatype].dtype


@pytest.mark.parametrize("datatype, field, values, message", [
    ("INT8", "int_contents", [1, 300, 2], "outside INT8's range -128 to 127"),
    ("UINT16", "uint_contents", [1, 70000, 2], "outside UINT16's range"),
    ("FP32", "int_contents", [1, 2, 3], "FP32 data goes in contents.fp32_contents, not contents.int_contents"),
    ("FP32", "fp32_contents", [1.0, 2.0], "2 elements in contents.fp32_contents for a shape of 3"),
    ("FP16", "fp32_contents", [1.0, 2.0, 3.0], "FP16 has no typed contents field"),
])
def test_typed_contents_that_do_not_fit_are_refused(datatype, field, values, message):
    with pytest.raises(BadRequest, match=message):
        decode_request(_typed(datatype, field, values), max_elements=1000)


def test_raw_and_typed_contents_are_never_mixed_and_counts_must_agree():
    request = _typed("FP32", "fp32_contents", [1.0, 2.0, 3.0])
    request.raw_input_contents.append(np.zeros(3, np.float32).tobytes())
    with pytest.raises(BadRequest, match="both contents and raw_input_contents"):
        decode_request(request, max_elements=1000)
    request = _request(CASES["FP32"], "FP32")
    request.raw_input_contents.append(b"")
    with pytest.raises(BadRequest, match="raw_input_contents has 2 entries for 1 inputs"):
        decode_request(request, max_elements=1000)
    request = _request(CASES["FP32"], "FP32")
    request.raw_input_contents[0] = request.raw_input_contents[0][:-1]
    with pytest.raises(BadRequest, match="11 bytes of binary data, expected 12"):
        decode_request(request, max_elements=1000)


def test_inputs_are_checked_against_the_model_before_their_data_is_decoded():
    spec = Signature.from_config(make_config("m", [TensorSpec("T", "FP32", (3,))], [TensorSpec("Y", "FP32", (3,))],
                                             max_batch_size=4))
    budget = MemoryBudget(1 << 20)
    huge = _typed("FP32", "fp32_contents", [], shape=(5, 3))  # a batch of 5, no data at all
    with pytest.raises(BadRequest, match="batch size 5; the model accepts 1 to 4"), budget.claim() as claim:
        decode_request(huge, max_elements=1000, spec=spec, claim=claim)
    wrong = _typed("INT64", "int64_contents", [1, 2, 3])
    with pytest.raises(BadRequest, match="datatype INT64, the model expects FP32"):
        decode_request(wrong, max_elements=1000, spec=spec)
    # A shape the data could never fill is refused before anything is allocated for it.
    with pytest.raises(BadRequest, match="elements exceed the limit of 1000"):
        decode_request(_typed("FP32", "fp32_contents", [], shape=(100, 100)), max_elements=1000)


def test_decoding_is_charged_to_the_claim():
    budget = MemoryBudget(64)
    with pytest.raises(PayloadTooLarge), budget.claim() as claim:
        decode_request(_typed("FP64", "fp64_contents", [0.0] * 30, shape=(1, 30)), max_elements=1000, claim=claim)
    assert budget.used == 0
