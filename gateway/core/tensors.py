"""Tensors in their raw little-endian layout, as Triton's binary HTTP extension and gRPC's
``raw_input_contents``/``raw_output_contents`` carry them: BYTES elements are each a
4-byte little-endian length then the bytes, BOOL one byte per element, every other type
its little-endian numpy layout. Nothing is allocated beyond what the bytes can fill.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
from model_repo import datatypes

from .budget import BYTES_ELEMENT_COST, Claim
from .errors import BadRequest, BinaryDataError, brief
from .types import InputSpec

MAX_DIMS = 64  # numpy's limit on dimensions


def check_header(name: str, datatype: Any, shape: Any, max_elements: int,
                 spec: InputSpec | None) -> tuple[datatypes.Datatype, list[int], int]:
    """(datatype, shape, element count) of an input whose header every front end reads:
    a known datatype, a shape numpy can build (at most 64 dimensions, each an integer from
    0 to ``max_elements``), what ``spec`` allows, and no more than ``max_elements``
    elements; checked before any of its data is decoded."""
    try:
        dtype = datatypes.from_v2(datatype)
    except ValueError as exc:
        raise BadRequest(f"input {brief(name)}: {exc}") from None
    if not (isinstance(shape, list) and len(shape) <= MAX_DIMS and _dims_in(shape, max_elements)):
        raise BadRequest(f"input {brief(name)}: 'shape' must be a list of at most {MAX_DIMS} integers from 0 to "
                         f"{max_elements}, got {brief(shape)}")
    if spec is not None:
        spec.check_input(name, dtype.v2, shape)
    count = math.prod(shape)
    if count > max_elements:
        raise BadRequest(f"input {brief(name)}: {count} elements exceed the limit of {max_elements}")
    return dtype, shape, count


def _dims_in(shape: list, high: int) -> bool:
    # A plain loop: a generator in all() costs more than the check on a few dimensions.
    for d in shape:
        if type(d) is not int or not 0 <= d <= high:  # exactly int: JSON's true is not a 1
            return False
    return True


def from_raw(name: str, dtype: datatypes.Datatype, chunk: memoryview, count: int,
             claim: Claim | None = None) -> np.ndarray:
    """``count`` elements of ``dtype`` from ``chunk`` (a flat array; shape it yourself)."""
    if dtype.v2 == "BYTES":
        return deserialize_bytes(chunk, count, name, claim)
    expected = count * dtype.numpy.itemsize
    if len(chunk) != expected:
        raise BinaryDataError(f"input {brief(name)}: {len(chunk)} bytes of binary data, expected {expected} "
                              f"for {count} {dtype.v2} elements")
    return np.frombuffer(chunk, dtype=dtype.numpy.newbyteorder("<"))


def deserialize_bytes(buffer: memoryview | bytes, count: int, name: str = "",
                      claim: Claim | None = None) -> np.ndarray:
    view = memoryview(buffer)
    if count > len(view) // 4:  # each element has a 4-byte length: never allocate past the data
        raise BinaryDataError(f"input {brief(name)}: {count} BYTES elements need at least {4 * count} bytes, "
                              f"the data has {len(view)}")
    if claim is not None:
        claim.take(count * BYTES_ELEMENT_COST + len(view), f"input {brief(name)}")
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(view):
            raise BinaryDataError(f"input {brief(name)}: BYTES data ends after {i} of {count} elements")
        (length,) = struct.unpack_from("<I", view, pos)
        pos += 4
        if pos + length > len(view):
            raise BinaryDataError(f"input {brief(name)}: BYTES element {i} of {length} bytes runs past the data")
        out[i] = bytes(view[pos:pos + length])
        pos += length
    if pos != len(view):
        raise BinaryDataError(f"input {brief(name)}: {len(view) - pos} bytes left after {count} BYTES elements")
    return out


def serialize_bytes(array: np.ndarray) -> bytes:
    parts = []
    for item in array.reshape(-1):
        raw = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def to_raw(array: np.ndarray) -> bytes:
    """The raw layout of ``array`` (BYTES or numeric)."""
    if datatypes.from_numpy(array.dtype).v2 == "BYTES":
        return serialize_bytes(array)
    return _little_endian(array).tobytes()


def _little_endian(array: np.ndarray) -> np.ndarray:
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)
