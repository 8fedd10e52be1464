"""Frozen TensorFlow GraphDef ``.pb`` files (variables already folded into constants)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..errors import SourceError, first_line
from .base import InputSpec, Source

SOURCE_FILE = "model.pb"
# Nodes that end a graph without being a model output.
_NOT_OUTPUTS = {"Const", "NoOp", "Placeholder", "PlaceholderWithDefault", "Assert", "SaveV2",
                "RestoreV2", "VarHandleOp", "VariableV2", "Print", "PrintV2"}


def _tensor(name: str) -> str:
    return name if ":" in name else f"{name}:0"


def _node(name: str) -> str:
    return name.split(":")[0].lstrip("^")


def infer_io(graph_def, inputs: list[str] | None, outputs: list[str] | None, origin: str):
    nodes = {n.name: n for n in graph_def.node}
    if not inputs:
        inputs = [n.name for n in graph_def.node if n.op == "Placeholder"]
        if not inputs:
            raise SourceError(f"{origin}: no Placeholder nodes to use as inputs; name them with --inputs")
    if not outputs:
        consumed = {_node(i) for n in graph_def.node for i in n.input}
        outputs = [n.name for n in graph_def.node if n.name not in consumed and n.op not in _NOT_OUTPUTS]
        if len(outputs) != 1:
            raise SourceError(f"{origin}: cannot tell the outputs apart; pass --outputs with one or more of "
                              f"these candidate nodes: {', '.join(outputs) or '(none found)'}")
    for name in list(inputs) + list(outputs):
        if _node(name) not in nodes:
            raise SourceError(f"{origin}: no node named {_node(name)!r} in the graph")
    return [_tensor(n) for n in inputs], [_tensor(n) for n in outputs]


def load_graphdef(path: Path, inputs: list[str] | None = None, outputs: list[str] | None = None) -> Source:
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    origin = str(path)
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except DecodeError as exc:
        raise SourceError(f"{origin}: not a TensorFlow GraphDef protobuf ({exc})") from None
    if not graph_def.node:
        raise SourceError(f"{origin}: empty or not a TensorFlow GraphDef")
    in_tensors, out_tensors = infer_io(graph_def, inputs, outputs, origin)

    graph = tf.Graph()
    with graph.as_default():
        try:
            tf.compat.v1.import_graph_def(graph_def, name="")
        except (ValueError, tf.errors.OpError) as exc:
            raise SourceError(f"{origin}: the GraphDef does not import: {first_line(exc)}") from None
    specs = []
    for tensor_name in in_tensors:
        tensor = graph.get_tensor_by_name(tensor_name)
        shape = tuple(tensor.shape.as_list()) if tensor.shape.rank is not None else (None,)
        specs.append(InputSpec(_node(tensor_name), np.dtype(tensor.dtype.as_numpy_dtype), shape))
    names = [_node(t) for t in out_tensors]
    session = tf.compat.v1.Session(graph=graph)

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = session.run(out_tensors, {t: feeds[_node(t)] for t in in_tensors})
        return dict(zip(names, values))

    def frozen():
        renames = {t: _node(t) for t in in_tensors + out_tensors}
        return graph_def, in_tensors, out_tensors, renames, {}

    def save(source_dir: Path) -> dict:
        source_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, source_dir / SOURCE_FILE)
        return {"format": "graphdef", "path": f"source/{SOURCE_FILE}",
                "inputs": in_tensors, "outputs": out_tensors}

    return Source(format="graphdef", origin=origin, inputs=specs, output_names=names, run=run,
                  graph=frozen, save=save, details={"params": _const_params(graph_def)})


def _const_params(graph_def) -> int:
    import tensorflow as tf

    total = 0
    for node in graph_def.node:
        if node.op == "Const":
            dims = tf.TensorShape(node.attr["value"].tensor.tensor_shape).as_list()
            if dims and all(d is not None for d in dims) and len(dims) >= 1:
                total += int(np.prod(dims))
    return total
