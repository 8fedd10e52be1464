"""Is what tf2onnx wrote a real ONNX model? Checker, op scan, onnxruntime load."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .errors import InvalidModelError, UnsupportedOpError, first_line

# Domains onnxruntime implements (ai.onnx.contrib: with onnxruntime-extensions registered,
# which open_session then proves); anything else (e.g. tf2onnx's
# "ai.onnx.converters.tensorflow") is a TensorFlow op tf2onnx could not convert.
_KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.contrib"}


def unconverted_ops(model) -> Counter:
    """Nodes onnxruntime cannot run, by op type, subgraphs (Loop/If/Scan bodies) included."""
    import onnx
    from onnx import defs

    found: Counter = Counter()

    def walk(graph):
        for node in graph.node:
            if node.domain not in _KNOWN_DOMAINS:
                found[node.op_type] += 1
            elif node.domain in ("", "ai.onnx") and not defs.has(node.op_type):
                found[node.op_type] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(model.graph)
    return found


def check_ops(model) -> None:
    ops = unconverted_ops(model)
    if ops:
        listed = ", ".join(f"{op} (x{n})" for op, n in sorted(ops.items()))
        hint = ""
        if any(op.startswith("CudnnRNN") for op in ops):
            hint = ("; LSTM/GRU traced for a GPU: convert with CUDA_VISIBLE_DEVICES='' so Keras traces "
                    "the CPU kernels")
        raise UnsupportedOpError(f"the ONNX converter could not convert these TensorFlow ops: {listed}{hint}",
                                 ops=sorted(ops))


def check_model_file(path: Path) -> None:
    """onnx.checker on the saved file (path-based, so external data over 2 GB works)."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=False)
    except onnx.checker.ValidationError as exc:
        raise InvalidModelError(f"{path.name}: fails onnx.checker: {first_line(exc)}") from None


def open_session(path: Path, extensions: bool = False):
    """An onnxruntime CPU session: proof that the file loads where it will be served
    (``extensions``: with onnxruntime-extensions' custom ops, as the gateway will)."""
    import onnxruntime as ort

    from .custom_ops import session_options

    options = session_options(extensions)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        raise InvalidModelError(f"{path.name}: onnxruntime cannot load it: {first_line(exc)}") from None
