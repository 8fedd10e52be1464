"""The KServe v2 inference body, JSON and Triton's binary tensor extension, both ways.

A binary request is ``<JSON header><tensor bytes>...``: the header's length is in the
``Inference-Header-Content-Length`` HTTP header, and each input sent in binary carries
``parameters.binary_data_size``; their bytes follow the header in input order. BYTES
elements and every other type are laid out as ``core.tensors`` says. Responses use the same
framing for outputs asked for in binary (``binary_data`` per output, or
``binary_data_output`` for all). Nothing here knows about models or HTTP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from model_repo import datatypes

from ..core.budget import BYTES_ELEMENT_COST, JSON_OUTPUT_ELEMENT_COST, Claim, json_cost, scan_json
from ..core.classification import requested_output
from ..core.errors import BadRequest, BinaryDataError, brief
from ..core.shm import SharedMemoryRegions, output_placement, read_input, write_output
from ..core.tensors import check_header, from_raw, to_raw
from ..core.types import InferRequest, InferResponse, InputSpec, InputTensor, OutputRequest


# ------------------------------------------------------------------ requests
def decode_request(body: bytes, header_length: int | None, *, max_elements: int,
                   spec: InputSpec | None = None, claim: Claim | None = None,
                   shm: SharedMemoryRegions | None = None) -> InferRequest:
    """Parse and check a request; ``claim`` is charged for what decoding allocates; inputs
    may come from (and outputs go to) ``shm``'s registered regions."""
    if header_length == 0:
        return _raw_request(body, max_elements, spec, claim)
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        if header_length <= 0 or header_length > len(body):
            raise BinaryDataError(f"Inference-Header-Content-Length {header_length} is outside the "
                                  f"body of {len(body)} bytes")
        header, binary = body[:header_length], memoryview(body)[header_length:]  # the header alone is copied
    cost, maybe_bools = scan_json(header)
    if claim is not None:
        claim.take(cost, "request header")
    doc = _json_object(header, "request header")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("request needs a non-empty 'inputs' list")
    parameters = _parameters(doc, "request")

    inputs: list[InputTensor] = []
    offset = 0
    seen: set[str] = set()
    limits = _Limits(max_elements, spec, claim, shm, maybe_bools)
    for raw in raw_inputs:
        tensor, used = _decode_input(raw, binary, offset, limits)
        if tensor.name in seen:
            raise BadRequest(f"input {brief(tensor.name)} appears twice")
        seen.add(tensor.name)
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise BinaryDataError(f"binary data is {len(binary)} bytes but the inputs declare {offset}")

    outputs = None
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise BadRequest("'outputs' must be a list")
        outputs = [_decode_output(raw, shm) for raw in doc["outputs"]]
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    return InferRequest(inputs=inputs, outputs=outputs, id=request_id,
                        binary_output=bool(parameters.get("binary_data_output", False)),
                        parameters=parameters, checked=spec)


def _raw_request(body: bytes, max_elements: int, spec: InputSpec | None, claim: Claim | None) -> InferRequest:
    """Triton's raw binary request: no JSON header, the whole body is the model's one input
    (a BYTES input: one element). Its shape follows from the byte size, at batch 1 for a
    batching model, so at most one dimension may vary; every output comes back in binary."""
    inputs = getattr(spec, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise BinaryDataError("a raw binary request (Inference-Header-Content-Length: 0) needs a model with "
                              "exactly one input")
    meta = inputs[0]
    dims = list(meta.dims)
    variable = [i for i, d in enumerate(dims) if d == -1]
    if meta.datatype == "BYTES":
        if dims != [1]:
            raise BinaryDataError(f"a raw binary request of BYTES needs an input of shape [1], {meta.name!r} is {dims}")
    elif len(variable) > 1:
        raise BinaryDataError(f"a raw binary request cannot tell the shape of {meta.name!r}: {dims} has more "
                              "than one variable dimension")
    else:
        itemsize, fixed = datatypes.from_v2(meta.datatype).numpy.itemsize, math.prod(d for d in dims if d != -1)
        if not body or len(body) % (itemsize * fixed) or (not variable and len(body) != itemsize * fixed):
            raise BinaryDataError(f"a raw binary request of {len(body)} bytes is no whole {meta.datatype} "
                                  f"tensor of shape {dims}")
        if variable:
            dims[variable[0]] = len(body) // (itemsize * fixed)
    shape = [1, *dims] if getattr(spec, "batching", False) else dims
    dtype, shape, count = check_header(meta.name, meta.datatype, shape, max_elements, spec)
    if dtype.v2 == "BYTES":
        if claim is not None:
            claim.take(BYTES_ELEMENT_COST, f"input {brief(meta.name)}")
        data = np.empty(1, dtype=object)
        data[0] = bytes(body)
    else:
        data = from_raw(meta.name, dtype, memoryview(body), count, claim)
    tensor = InputTensor(meta.name, dtype.v2, tuple(shape), data.reshape(shape))
    return InferRequest(inputs=[tensor], binary_output=True, checked=spec)


def parse_json_object(text: bytes, what: str, claim: Claim | None = None) -> dict[str, Any]:
    """A JSON object from a client. orjson refuses nesting deeper than 1024 (the standard
    library would raise RecursionError), lone surrogates, NaN and Infinity."""
    if claim is not None:
        claim.take(json_cost(text), what)
    return _json_object(text, what)


def _json_object(text: bytes, what: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return doc


def _parameters(doc: dict, what: str) -> dict[str, Any]:
    params = doc.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest(f"{what} 'parameters' must be an object, got {brief(params)}")
    return params


@dataclass(frozen=True)
class _Limits:
    max_elements: int
    spec: InputSpec | None
    claim: Claim | None
    shm: SharedMemoryRegions | None
    maybe_bools: bool  # the body has a JSON true or false somewhere


def _decode_input(raw: Any, binary: memoryview, offset: int, limits: _Limits) -> tuple[InputTensor, int]:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise BadRequest("each input needs a 'name' string")
    name = raw["name"]
    dtype, shape, count = check_header(name, raw.get("datatype"), raw.get("shape"), limits.max_elements,
                                       limits.spec)
    params = _parameters(raw, f"input {brief(name)}")
    size = params.get("binary_data_size")
    if params.get("shared_memory_region") is not None:
        data = read_input(limits.shm, name, dtype, params, count, limits.claim)
        used = 0
    elif size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BinaryDataError(f"input {brief(name)}: binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise BinaryDataError(f"input {brief(name)}: binary_data_size {size} runs past the end of the "
                                  f"body ({len(binary) - offset} bytes left)")
        data = from_raw(name, dtype, binary[offset:offset + size], count, limits.claim)
        used = size
    else:
        if "data" not in raw:
            raise BadRequest(f"input {brief(name)} has neither 'data' nor parameters.binary_data_size")
        data = _from_json(name, dtype, raw["data"], count, limits)
        used = 0
    return InputTensor(name, dtype.v2, tuple(shape), data.reshape(shape)), used


def _from_json(name: str, dtype: datatypes.Datatype, data: Any, count: int, limits: _Limits) -> np.ndarray:
    if limits.claim is not None:  # the parsed JSON is charged already; this is the array built from it
        limits.claim.take(count * (BYTES_ELEMENT_COST if dtype.v2 == "BYTES" else dtype.numpy.itemsize),
                          f"input {brief(name)}")
    if dtype.v2 == "BYTES":
        return _strings(name, _flatten(data), count)
    try:
        numbers = np.asarray(data)  # nested lists of numbers in C: no work per element in Python
    except (ValueError, OverflowError):  # ragged nesting, or an integer no numpy type holds
        numbers = None
    # numpy would quietly take true as 1 among numbers, and mix 2**64-1 with 0 into floats:
    # then, or when numpy could not type the values, each value's JSON type is checked.
    if (numbers is None or numbers.dtype.kind not in "biuf" or (limits.maybe_bools and dtype.numpy.kind != "b")
            or (numbers.dtype.kind == "f" and dtype.numpy.kind in "iu")):
        return _checked_numbers(name, dtype, _flatten(data), count)
    if numbers.size != count:
        raise BadRequest(f"input {brief(name)}: {numbers.size} elements of data for a shape of {count}")
    if numbers.dtype.kind not in _JSON_KINDS[dtype.numpy.kind]:
        raise BadRequest(f"input {brief(name)}: {dtype.v2} data cannot hold JSON values of type "
                         f"{_KIND_NAMES[numbers.dtype.kind]}")
    if numbers.dtype.kind in "iu" and dtype.numpy.kind in "iu" and numbers.size:
        info, low, high = np.iinfo(dtype.numpy), numbers.min(), numbers.max()
        if low < info.min or high > info.max:
            raise BadRequest(f"input {brief(name)}: value {low if low < info.min else high} is out of range "
                             f"for {dtype.v2}")
    return numbers.astype(dtype.numpy, copy=False).reshape(-1)


_JSON_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}  # numpy kinds of JSON values each type takes
_KIND_NAMES = {"b": "bool", "i": "int", "u": "int", "f": "float"}


def _checked_numbers(name: str, dtype: datatypes.Datatype, flat: list[Any], count: int) -> np.ndarray:
    if len(flat) != count:
        raise BadRequest(f"input {brief(name)}: {len(flat)} elements of data for a shape of {count}")
    kinds = {type(x) for x in flat}
    allowed = {"b": {bool}, "i": {int}, "u": {int}, "f": {int, float}}[dtype.numpy.kind]
    if not kinds <= allowed:
        found = ", ".join(sorted(k.__name__ for k in kinds - allowed))
        raise BadRequest(f"input {brief(name)}: {dtype.v2} data cannot hold JSON values of type {found}")
    try:
        return np.array(flat, dtype=dtype.numpy)  # OverflowError for out-of-range ints
    except (OverflowError, ValueError) as exc:
        raise BadRequest(f"input {brief(name)}: {exc}") from None


def _strings(name: str, flat: list[Any], count: int) -> np.ndarray:
    if len(flat) != count:
        raise BadRequest(f"input {brief(name)}: {len(flat)} elements of data for a shape of {count}")
    if not all(isinstance(x, str) for x in flat):
        raise BadRequest(f"input {brief(name)}: BYTES data in JSON must be strings")
    array = np.empty(len(flat), dtype=object)
    try:
        array[:] = [x.encode() for x in flat]
    except UnicodeEncodeError as exc:  # a lone surrogate, should a parser ever let one through
        raise BadRequest(f"input {brief(name)}: BYTES string is not valid Unicode: {exc.reason}") from None
    return array


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _decode_output(raw: Any, shm: SharedMemoryRegions | None) -> OutputRequest:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise BadRequest("each requested output needs a 'name' string")
    what = f"output {brief(raw['name'])}"
    params = _parameters(raw, what)
    binary = params.get("binary_data")
    return requested_output(raw["name"], None if binary is None else bool(binary), output_placement(shm, what, params),
                            params.get("classification"))


# ---------------------------------------------------------------- responses
def encode_response(response: InferResponse, placements: dict[str, tuple[str, int, int]] | None = None,
                    shm: SharedMemoryRegions | None = None) -> tuple[bytes, int | None]:
    """The body, and the JSON header's length when any output is binary (else None).
    Outputs named in ``placements`` are written into ``shm``'s regions instead."""
    outputs_json = []
    buffers: list[bytes] = []
    for name, array, binary in response.outputs:
        v2 = datatypes.from_numpy(array.dtype).v2
        entry: dict[str, Any] = {"name": name, "datatype": v2, "shape": list(array.shape)}
        if placements and name in placements and shm is not None:
            entry["parameters"] = write_output(shm, name, array, placements[name])
        elif binary:
            raw = to_raw(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            buffers.append(raw)
        else:
            entry["data"] = _to_json(array, v2)
        outputs_json.append(entry)
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version,
                           "outputs": outputs_json}
    if response.id is not None:
        doc["id"] = response.id
    # orjson writes numpy arrays itself (no Python number per element); NaN and infinities,
    # which JSON cannot carry, become null.
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not buffers:
        return header, None
    return b"".join([header, *buffers]), len(header)


def response_cost(response: InferResponse) -> int:
    """An upper estimate of the memory :func:`encode_response` allocates."""
    return sum(array.nbytes if binary else array.size * JSON_OUTPUT_ELEMENT_COST
               for _, array, binary in response.outputs)


def _to_json(array: np.ndarray, v2: str) -> list[Any] | np.ndarray:
    flat = array.reshape(-1)
    if v2 == "BYTES":
        # JSON can only carry text; non-UTF-8 bytes need binary_data (as in Triton).
        return [x.decode("utf-8", errors="replace") if isinstance(x, bytes) else str(x) for x in flat]
    return np.ascontiguousarray(flat)  # orjson serialises C-contiguous, native-order arrays
