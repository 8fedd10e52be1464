"""``config.pbtxt`` for a converted model, derived from the ONNX graph itself."""

from __future__ import annotations

from model_repo import TensorSpec, make_config
from model_repo.datatypes import BY_ONNX

from .errors import InvalidModelError

DEFAULT_MAX_BATCH_SIZE = 64


def _dims(value_info) -> list[int]:
    dims = []
    for dim in value_info.type.tensor_type.shape.dim:
        dims.append(dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else -1)
    return dims


def tensor_specs(graph, batched: bool):
    specs = []
    initializers = {t.name for t in graph.initializer}
    for kind, values in (("input", graph.input), ("output", graph.output)):
        out = []
        for value in values:
            if value.name in initializers:
                continue
            dtype = BY_ONNX.get(value.type.tensor_type.elem_type)
            if dtype is None:
                raise InvalidModelError(f"{kind} {value.name!r} has ONNX element type "
                                        f"{value.type.tensor_type.elem_type}, which Triton cannot serve")
            dims = _dims(value)
            out.append(TensorSpec(value.name, dtype.v2, tuple(dims[1:] if batched else dims)))
        specs.append(out)
    return specs


def batch_is_dynamic(graph) -> bool:
    """True when every input and output has a leading dimension that is not fixed."""
    values = list(graph.input) + list(graph.output)
    return bool(values) and all(_dims(v)[:1] == [-1] for v in values)


def config_for(model, name: str, max_batch_size: int | None = None):
    batched = batch_is_dynamic(model.graph)
    inputs, outputs = tensor_specs(model.graph, batched)
    size = (DEFAULT_MAX_BATCH_SIZE if max_batch_size is None else max_batch_size) if batched else 0
    return make_config(name, inputs, outputs, max_batch_size=size, dynamic_batching=size > 0)
