"""``ModelInferRequest`` to the core's ``InferRequest``, and ``InferResponse`` to
``ModelInferResponse``.

A request's inputs come either all in ``raw_input_contents`` (one entry per input, in input
order, laid out as ``core.tensors`` says) or each in its typed ``contents`` field; as in
Triton, a request never mixes them. Each input's name, datatype and shape are checked
against the model (``InputSpec.check_input``) before its data is decoded, as over HTTP, and
what decoding allocates is charged to the request's ``Claim``. Answers always carry
``raw_output_contents`` (what tritonclient and Triton use). Nothing here knows grpc or models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from model_repo import datatypes
from tritonclient.grpc import service_pb2 as pb

from ..core.budget import BYTES_ELEMENT_COST, Claim
from ..core.classification import requested_output
from ..core.errors import BadRequest, BinaryDataError, brief
from ..core.shm import SharedMemoryRegions, output_placement, read_input, write_output
from ..core.tensors import check_header, from_raw, to_raw
from ..core.types import InferRequest, InferResponse, InputSpec, InputTensor, OutputRequest


# The typed field that carries each datatype and that field's own element type (FP16 has
# none in the protocol: raw only).
CONTENTS = {
    "BOOL": ("bool_contents", np.bool_), "INT8": ("int_contents", np.int32), "INT16": ("int_contents", np.int32),
    "INT32": ("int_contents", np.int32), "INT64": ("int64_contents", np.int64),
    "UINT8": ("uint_contents", np.uint32), "UINT16": ("uint_contents", np.uint32),
    "UINT32": ("uint_contents", np.uint32), "UINT64": ("uint64_contents", np.uint64),
    "FP32": ("fp32_contents", np.float32), "FP64": ("fp64_contents", np.float64), "BYTES": ("bytes_contents", None),
}


@dataclass(frozen=True)
class _Limits:
    max_elements: int
    spec: InputSpec | None
    claim: Claim | None
    shm: SharedMemoryRegions | None


def decode_request(message: pb.ModelInferRequest, *, max_elements: int, spec: InputSpec | None = None,
                   claim: Claim | None = None, shm: SharedMemoryRegions | None = None) -> InferRequest:
    """Check and decode a request; ``claim`` is charged for the arrays decoding builds;
    inputs may come from (and outputs go to) ``shm``'s registered regions."""
    # Each access to a protobuf field builds a wrapper (about a microsecond): read each once.
    tensors, raw = message.inputs, message.raw_input_contents
    if not tensors:
        raise BadRequest("request needs at least one input")
    if raw and len(raw) != len(tensors):
        raise BinaryDataError(f"raw_input_contents has {len(raw)} entries for {len(tensors)} inputs: "
                              "send every input's data there, in input order, or none")
    limits = _Limits(max_elements, spec, claim, shm)
    inputs: list[InputTensor] = []
    seen: set[str] = set()
    for index, tensor in enumerate(tensors):
        name = tensor.name
        if name in seen:
            raise BadRequest(f"input {brief(name)} appears twice")
        seen.add(name)
        inputs.append(_decode_input(tensor, raw[index] if raw else None, limits))
    requested = message.outputs
    outputs = [_decode_output(output, shm) for output in requested] if requested else None
    return InferRequest(inputs=inputs, outputs=outputs, id=message.id or None,
                        parameters=parameters(message.parameters), checked=spec)


def parameters(entries: Any) -> dict[str, Any]:
    """A protobuf parameter map (``InferParameter`` or ``ModelRepositoryParameter`` values)
    as plain Python values."""
    out: dict[str, Any] = {}
    if not entries:  # most messages: no items() view to build
        return out
    for key, value in entries.items():
        which = value.WhichOneof("parameter_choice")
        out[key] = None if which is None else getattr(value, which)
    return out


def _decode_input(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None,
                  limits: _Limits) -> InputTensor:
    name = tensor.name
    dtype, shape, count = check_header(name, tensor.datatype, list(tensor.shape), limits.max_elements, limits.spec)
    options = parameters(tensor.parameters)
    if options.get("shared_memory_region") is not None:
        if raw or tensor.HasField("contents"):
            raise BadRequest(f"input {brief(name)}: data both in shared memory and in the message")
        data = read_input(limits.shm, name, dtype, options, count, limits.claim)
    elif raw is not None:
        if tensor.HasField("contents"):
            raise BadRequest(f"input {brief(name)}: data in both contents and raw_input_contents")
        data = from_raw(name, dtype, memoryview(raw), count, limits.claim)
    else:
        data = _from_contents(name, dtype, tensor.contents, count, limits.claim)
    return InputTensor(name, dtype.v2, tuple(shape), data.reshape(shape))


def _from_contents(name: str, dtype: datatypes.Datatype, contents: pb.InferTensorContents, count: int,
                   claim: Claim | None) -> np.ndarray:
    if dtype.v2 not in CONTENTS:
        raise BadRequest(f"input {brief(name)}: {dtype.v2} has no typed contents field; send it in "
                         "raw_input_contents")
    field, wide = CONTENTS[dtype.v2]
    stray = [f.name for f, _ in contents.ListFields() if f.name != field]
    if stray:
        raise BadRequest(f"input {brief(name)}: {dtype.v2} data goes in contents.{field}, not contents.{stray[0]}")
    values = getattr(contents, field)
    if len(values) != count:  # before building anything from it
        raise BadRequest(f"input {brief(name)}: {len(values)} elements in contents.{field} for a shape of {count}")
    if wide is None:  # BYTES
        if claim is not None:
            claim.take(count * BYTES_ELEMENT_COST + sum(len(v) for v in values), f"input {brief(name)}")
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array
    if claim is not None:
        claim.take(count * (np.dtype(wide).itemsize + dtype.numpy.itemsize), f"input {brief(name)}")
    array = np.array(values, dtype=wide)  # the field's own type: exact
    if array.dtype != dtype.numpy:  # INT8/16 from int_contents, UINT8/16 from uint_contents
        info = np.iinfo(dtype.numpy)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise BadRequest(f"input {brief(name)}: contents.{field} holds values outside {dtype.v2}'s range "
                             f"{info.min} to {info.max}")
        array = array.astype(dtype.numpy)
    return array


def _decode_output(output: pb.ModelInferRequest.InferRequestedOutputTensor,
                   shm: SharedMemoryRegions | None) -> OutputRequest:
    what = f"output {brief(output.name)}"
    options = parameters(output.parameters)
    return requested_output(output.name, None, output_placement(shm, what, options), options.get("classification"))


def encode_response(response: InferResponse, placements: dict[str, tuple[str, int, int]] | None = None,
                    shm: SharedMemoryRegions | None = None) -> pb.ModelInferResponse:
    """Outputs in ``raw_output_contents``, or, those named in ``placements``, written into
    ``shm``'s regions (their raw entry then empty, so entries stay aligned with outputs)."""
    message = pb.ModelInferResponse(model_name=response.model_name, model_version=response.model_version,
                                    id=response.id or "")
    for name, array, _ in response.outputs:
        entry = message.outputs.add(name=name, datatype=datatypes.from_numpy(array.dtype).v2, shape=array.shape)
        if placements and name in placements and shm is not None:
            for key, value in write_output(shm, name, array, placements[name]).items():
                if isinstance(value, str):
                    entry.parameters[key].string_param = value
                else:
                    entry.parameters[key].int64_param = value
            message.raw_output_contents.append(b"")
        else:
            message.raw_output_contents.append(to_raw(array))
    return message


def response_cost(response: InferResponse) -> int:
    """An upper estimate of what :func:`encode_response` allocates: each output's raw bytes,
    and their copy in the message."""
    return 2 * sum(_raw_size(array) for _, array, _ in response.outputs)


def _raw_size(array: np.ndarray) -> int:
    if array.dtype == object:
        return sum(4 + (len(x) if isinstance(x, bytes) else 4 * len(str(x))) for x in array.reshape(-1))
    return array.nbytes
