"""The tf2onnx step: a frozen TensorFlow graph -> an ONNX ModelProto.

tf2onnx continues past ops it cannot map and leaves them in the graph as raw TensorFlow
ops, so its result is only a candidate: :mod:`converters.check` decides whether it is a
model."""

from __future__ import annotations

import logging

import numpy as np

DEFAULT_OPSET = 17  # ONNX 1.12: every op tf2onnx 1.17 emits, LayerNormalization included; Triton's ORT runs it
MAX_OPSET = 18  # the newest tf2onnx 1.17 knows
MIN_OPSET = 13


def _erfc(ctx, node, name, args):
    """Keras 3's exact GELU traces to Erfc, which tf2onnx cannot map: erfc(x) = 1 - erf(x)."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    node.type = "Erf"
    node.domain = ""
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype=dtype))
    sub = ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(f"{name}_erfc"))
    ctx.replace_inputs(sub, [one.output[0], node.output[0]])
    return node


CUSTOM_OP_HANDLERS = {"Erfc": (_erfc, [])}


def convert_graph(graph_def, inputs: list[str], outputs: list[str], renames: dict[str, str],
                  tables: dict, *, opset: int, name: str = "tunegate"):
    """Returns (ModelProto, tf2onnx external tensor storage: None without large_model)."""
    import tensorflow as tf
    from tf2onnx import constants, utils
    from tf2onnx.convert import _convert_common

    from .custom_ops import tidy
    from .string_ops import handlers

    # tf2onnx logs every unmapped op at ERROR; check.py names them in one clear message instead.
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with tf.device("/cpu:0"):
            model, storage = _convert_common(
                graph_def, name=name, continue_on_error=True, opset=opset,
                custom_op_handlers={**CUSTOM_OP_HANDLERS, **handlers(tables)}, input_names=inputs, output_names=outputs,
                tensors_to_rename=renames, initialized_tables=tables,
                # tf2onnx's string handlers (split, regex replace, string equality, hashing)
                # emit onnxruntime-extensions ops only when the contrib opset is asked for;
                # tidy() drops it again from models that use none.
                extra_opset=[utils.make_opsetid(constants.CONTRIB_OPS_DOMAIN, 1)])
    finally:
        logger.setLevel(level)
    tidy(model)
    return model, storage
