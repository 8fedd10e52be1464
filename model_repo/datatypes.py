"""The one table of tensor datatypes: KServe v2 names, Triton config enums, numpy, ONNX."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc


@dataclass(frozen=True)
class Datatype:
    v2: str  # KServe v2 / Triton wire name
    config: int  # model_config_pb2.DataType
    numpy: np.dtype
    onnx: int  # onnx.TensorProto.DataType value

    @property
    def onnxruntime_type(self) -> str:
        """onnxruntime's type string for a tensor of this type, e.g. ``tensor(float)``."""
        return f"tensor({_ONNX_NAMES[self.onnx].lower()})"


# ONNX TensorProto enum values, written out so this module needs no onnx import.
_ONNX = {"FLOAT": 1, "UINT8": 2, "INT8": 3, "UINT16": 4, "INT16": 5, "INT32": 6, "INT64": 7,
         "STRING": 8, "BOOL": 9, "FLOAT16": 10, "DOUBLE": 11, "UINT32": 12, "UINT64": 13}
_ONNX_NAMES = {value: name for name, value in _ONNX.items()}

DATATYPES: tuple[Datatype, ...] = (
    Datatype("BOOL", mc.TYPE_BOOL, np.dtype(np.bool_), _ONNX["BOOL"]),
    Datatype("UINT8", mc.TYPE_UINT8, np.dtype(np.uint8), _ONNX["UINT8"]),
    Datatype("UINT16", mc.TYPE_UINT16, np.dtype(np.uint16), _ONNX["UINT16"]),
    Datatype("UINT32", mc.TYPE_UINT32, np.dtype(np.uint32), _ONNX["UINT32"]),
    Datatype("UINT64", mc.TYPE_UINT64, np.dtype(np.uint64), _ONNX["UINT64"]),
    Datatype("INT8", mc.TYPE_INT8, np.dtype(np.int8), _ONNX["INT8"]),
    Datatype("INT16", mc.TYPE_INT16, np.dtype(np.int16), _ONNX["INT16"]),
    Datatype("INT32", mc.TYPE_INT32, np.dtype(np.int32), _ONNX["INT32"]),
    Datatype("INT64", mc.TYPE_INT64, np.dtype(np.int64), _ONNX["INT64"]),
    Datatype("FP16", mc.TYPE_FP16, np.dtype(np.float16), _ONNX["FLOAT16"]),
    Datatype("FP32", mc.TYPE_FP32, np.dtype(np.float32), _ONNX["FLOAT"]),
    Datatype("FP64", mc.TYPE_FP64, np.dtype(np.float64), _ONNX["DOUBLE"]),
    Datatype("BYTES", mc.TYPE_STRING, np.dtype(np.object_), _ONNX["STRING"]),
)

BY_V2 = {d.v2: d for d in DATATYPES}
BY_CONFIG = {d.config: d for d in DATATYPES}
BY_ONNX = {d.onnx: d for d in DATATYPES}
BY_NUMPY = {d.numpy: d for d in DATATYPES}


def from_v2(name: object) -> Datatype:
    found = BY_V2.get(name) if isinstance(name, str) else None  # a client's list or dict is unhashable
    if found is None:
        shown = repr(name) if isinstance(name, str | int | float | None) else type(name).__name__
        raise ValueError(f"unknown datatype {shown[:40]}; expected one of {', '.join(BY_V2)}")
    return found


def from_numpy(dtype: np.dtype) -> Datatype:
    found = BY_NUMPY.get(dtype)  # every response asks, per output: one lookup
    if found is not None:
        return found
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return BY_V2["BYTES"]
    for d in DATATYPES:  # e.g. a scalar type such as np.float32 rather than its dtype
        if d.numpy == dtype:
            return d
    raise ValueError(f"numpy dtype {dtype} has no KServe v2 datatype")
