"""Tiny real ONNX models, built with onnx.helper and published into a real repository."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_repo import Repository, TensorSpec, make_config

OPSET = [helper.make_operatorsetid("", 17)]

# Every v2 datatype numpy holds, with its edge values: what the codec tests round-trip.
DATATYPE_CASES = {
    "BOOL": np.array([[True, False, True]]), "UINT8": np.array([[0, 7, 255]], np.uint8),
    "UINT16": np.array([[0, 65535, 3]], np.uint16), "UINT32": np.array([[1, 2**32 - 1, 0]], np.uint32),
    "UINT64": np.array([[1, 2**64 - 1, 0]], np.uint64), "INT8": np.array([[-128, 0, 127]], np.int8),
    "INT16": np.array([[-3, 0, 3]], np.int16), "INT32": np.array([[-(2**31), 0, 5]], np.int32),
    "INT64": np.array([[-(2**63), 0, 2**62]], np.int64), "FP16": np.array([[0.5, -1.25, 65504]], np.float16),
    "FP32": np.array([[0.1, -2.5, 3e38]], np.float32), "FP64": np.array([[0.1, -2.5, 1e300]], np.float64),
    "BYTES": np.array([[b"", b"\x00\xffraw", "héllo".encode()]], dtype=object),
}


def _save(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def publish(repo: Repository, name: str, model_bytes: bytes, config=None) -> int:
    with repo.staging(name) as staged:
        (staged / "model.onnx").write_bytes(model_bytes)
        return repo.publish(name, staged, config=config).version


def mlp_fp32(seed: int = 0) -> bytes:
    """OUT = relu(X @ W + b) and SUM = X + 1: a matmul (the batching-sensitive op) and an
    elementwise output, so requested-output subsets are visible."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.normal(size=(3,)).astype(np.float32), "B")
    one = numpy_helper.from_array(np.ones((1,), np.float32), "ONE")
    nodes = [helper.make_node("MatMul", ["X", "W"], ["XW"]), helper.make_node("Add", ["XW", "B"], ["Z"]),
             helper.make_node("Relu", ["Z"], ["OUT"]), helper.make_node("Add", ["X", "ONE"], ["SUM"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("OUT", TensorProto.FLOAT, ["N", 3]),
                               helper.make_tensor_value_info("SUM", TensorProto.FLOAT, ["N", 4])],
                              [w, b, one])
    return _save(graph)


def mlp_config(name: str, *, delay_us: int = 0, preferred=(), max_batch_size: int = 16):
    return make_config(name, [TensorSpec("X", "FP32", (4,))],
                       [TensorSpec("OUT", "FP32", (3,)), TensorSpec("SUM", "FP32", (4,))],
                       max_batch_size=max_batch_size, max_queue_delay_microseconds=delay_us,
                       preferred_batch_sizes=preferred)


def add_const_fp32(value: float) -> bytes:
    """Y = X + value: versions of one model answer differently."""
    c = numpy_helper.from_array(np.array([value], np.float32), "C")
    graph = helper.make_graph([helper.make_node("Add", ["X", "C"], ["Y"])], "addc",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 2])], [c])
    return _save(graph)


def add_const_config(name: str):
    return make_config(name, [TensorSpec("X", "FP32", (2,))], [TensorSpec("Y", "FP32", (2,))], max_batch_size=8)


def int64_model() -> bytes:
    """Y = X * 3 + 1 on INT64."""
    k = numpy_helper.from_array(np.array([3], np.int64), "K")
    one = numpy_helper.from_array(np.array([1], np.int64), "ONE")
    graph = helper.make_graph([helper.make_node("Mul", ["X", "K"], ["XK"]), helper.make_node("Add", ["XK", "ONE"], ["Y"])],
                              "int64", [helper.make_tensor_value_info("X", TensorProto.INT64, ["N", 3])],
                              [helper.make_tensor_value_info("Y", TensorProto.INT64, ["N", 3])], [k, one])
    return _save(graph)


def int64_config(name: str):
    return make_config(name, [TensorSpec("X", "INT64", (3,))], [TensorSpec("Y", "INT64", (3,))], max_batch_size=8)


def bytes_model() -> bytes:
    """Upper-cases strings (StringNormalizer takes a 1-D tensor: a model that does not batch)."""
    node = helper.make_node("StringNormalizer", ["TEXT"], ["UPPER"], case_change_action="UPPER", locale="C")
    graph = helper.make_graph([node], "upper", [helper.make_tensor_value_info("TEXT", TensorProto.STRING, ["C"])],
                              [helper.make_tensor_value_info("UPPER", TensorProto.STRING, ["C"])])
    return _save(graph)


def bytes_config(name: str):
    return make_config(name, [TensorSpec("TEXT", "BYTES", (-1,))], [TensorSpec("UPPER", "BYTES", (-1,))])


def bool_model() -> bytes:
    """NOT_A = not A; BOTH = A and B."""
    graph = helper.make_graph([helper.make_node("Not", ["A"], ["NOT_A"]), helper.make_node("And", ["A", "B"], ["BOTH"])],
                              "bools", [helper.make_tensor_value_info("A", TensorProto.BOOL, ["N", 2]),
                                        helper.make_tensor_value_info("B", TensorProto.BOOL, ["N", 2])],
                              [helper.make_tensor_value_info("NOT_A", TensorProto.BOOL, ["N", 2]),
                               helper.make_tensor_value_info("BOTH", TensorProto.BOOL, ["N", 2])])
    return _save(graph)


def bool_config(name: str):
    return make_config(name, [TensorSpec("A", "BOOL", (2,)), TensorSpec("B", "BOOL", (2,))],
                       [TensorSpec("NOT_A", "BOOL", (2,)), TensorSpec("BOTH", "BOOL", (2,))], max_batch_size=8)
