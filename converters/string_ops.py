"""tf2onnx handlers for what Keras' preprocessing layers trace to and tf2onnx 1.17 gets wrong
or does not know (docs/preprocessing-layers.md has the measurements behind each).

Each handler is tf2onnx's old custom-op API, ``handler(ctx, node, name, args)``, rewriting
one TensorFlow node into ONNX (``ai.onnx.ml``) or onnxruntime-extensions (``ai.onnx.contrib``)
ops. A handler that meets a form it does not cover fails a ``make_sure``; tf2onnx then leaves
the node as it was and check.py names the op.
"""

from __future__ import annotations

import functools

import numpy as np

# TensorFlow's StringSplitV2 with an empty separator (tf.strings.split's default, Keras
# TextVectorization's split="whitespace") splits on runs of ASCII whitespace. tf2onnx hands the
# empty separator on to onnxruntime-extensions' StringSplit, where empty means "into bytes":
# every token came out wrong. That op takes its separator as a set of characters and can skip
# empty tokens, which together are TensorFlow's rule (checked: tabs, newlines, runs, leading
# and trailing spaces; a no-break space stays inside its token, as in TensorFlow).
ASCII_WHITESPACE = " \t\n\r\v\f"
# One token per Unicode character, newlines included: RE2 (UTF-8 aware) splits on every
# character and keeps it.
ONE_CHARACTER = "(?s)(.)"


def string_split(ctx, node, name, args):
    from tf2onnx import constants, utils

    separator = node.inputs[1]
    utils.make_sure(separator.is_const(), "StringSplitV2 %s: the separator is not a constant", name)
    # A non-empty separator is a whole string in TensorFlow but a set of characters here, and
    # TensorFlow gives an empty input one empty token where this op gives none.
    utils.make_sure(separator.get_tensor_value() in ("", b""), "StringSplitV2 %s: only whitespace splitting", name)
    utils.make_sure(node.get_attr_value("maxsplit", -1) == -1, "StringSplitV2 %s: maxsplit is not supported", name)
    whitespace = ctx.make_const(utils.make_name(f"{name}_whitespace"), np.array([ASCII_WHITESPACE], dtype=object))
    skip_empty = ctx.make_const(utils.make_name(f"{name}_skip_empty"), np.array([True]))
    node.type = "StringSplit"
    node.domain = constants.CONTRIB_OPS_DOMAIN
    for attr in list(node.attr):
        del node.attr[attr]
    ctx.replace_inputs(node, [node.input[0], whitespace.output[0], skip_empty.output[0]])
    return node


def unicode_decode(ctx, node, name, args):
    """``tf.strings.unicode_split`` (TextVectorization's split="character") traces to
    UnicodeDecode -> (reshapes) -> UnicodeEncode of one code point per row: the characters
    as strings. Here the decode yields the characters themselves, as strings, with the same
    row splits, and :func:`unicode_encode` passes them through."""
    from onnx import TensorProto
    from tf2onnx import constants, utils

    utils.make_sure(node.get_attr_value("input_encoding") in (b"UTF-8", "UTF-8"), "UnicodeDecode %s: UTF-8 only", name)
    pattern = ctx.make_const(utils.make_name(f"{name}_character"), np.array([ONE_CHARACTER], dtype=object))
    splits, characters = node.output
    ctx.remove_node(node.name)
    ctx.make_node("StringRegexSplitWithOffsets", [node.input[0], pattern.output[0], pattern.output[0]],
                  outputs=[characters, utils.make_name(f"{name}_begin"), utils.make_name(f"{name}_end"), splits],
                  name=name, domain=constants.CONTRIB_OPS_DOMAIN,
                  dtypes=[TensorProto.STRING, TensorProto.INT64, TensorProto.INT64, TensorProto.INT64],
                  shapes=[[-1], [-1], [-1], [-1]])
    _strings_downstream(ctx, characters)


def _strings_downstream(ctx, output: str) -> None:
    """The reshapes between the decode and the encode carried code points; they now carry
    the characters, and tf2onnx's type bookkeeping must say so."""
    from onnx import TensorProto

    for consumer in ctx.find_output_consumers(output):
        if consumer.type == "UnicodeEncode":
            continue
        for out in consumer.output:
            ctx.set_dtype(out, TensorProto.STRING)
        _strings_downstream(ctx, consumer.output[0])


def unicode_encode(ctx, node, name, args):
    from onnx import TensorProto
    from tf2onnx import utils

    values = node.input[0]
    utils.make_sure(ctx.get_dtype(values) == TensorProto.STRING,
                    "UnicodeEncode %s: only the characters of a unicode_split", name)
    node.type = "Reshape"
    flat = ctx.make_const(utils.make_name(f"{name}_flat"), np.array([-1], dtype=np.int64))
    ctx.replace_inputs(node, [values, flat.output[0]])
    for attr in list(node.attr):
        del node.attr[attr]
    ctx.set_dtype(node.output[0], TensorProto.STRING)
    return node


def lookup(ctx, node, name, args, tables=None):
    """IntegerLookup's int64 -> int64 table, which tf2onnx refuses ("only string<->int64"),
    becomes ONNX-ML's LabelEncoder; string tables go on to tf2onnx's own CategoryMapper."""
    from onnx import TensorProto
    from tf2onnx import constants, utils
    from tf2onnx.custom_opsets.onnx_ml import LookupTableFind

    if ctx.get_dtype(node.input[1]) != TensorProto.INT64 or ctx.get_dtype(node.output[0]) != TensorProto.INT64:
        return LookupTableFind.version_8(ctx, node, initialized_tables=tables)
    table = node.inputs[0]
    while table.type == "Identity":
        table = table.inputs[0]
    shared_name = table.get_attr_value("shared_name")
    utils.make_sure(shared_name in (tables or {}), "LookupTableFindV2 %s: table %s not found", name, shared_name)
    utils.make_sure(node.inputs[2].is_const(), "LookupTableFindV2 %s: the default is not a constant", name)
    keys, values = tables[shared_name]
    default = int(node.inputs[2].get_tensor_value())
    shape, keys_input, outputs = ctx.get_shape(node.input[1]), node.input[1], node.output
    ctx.remove_node(node.name)
    ctx.make_node("LabelEncoder", [keys_input], outputs=outputs, name=name, domain=constants.AI_ONNX_ML_DOMAIN,
                  attr={"keys_int64s": [int(k) for k in keys], "values_int64s": [int(v) for v in values],
                        "default_int64": default},
                  shapes=[shape], dtypes=[TensorProto.INT64])
    if not ctx.find_output_consumers(table.output[0]):
        ctx.remove_node(table.name)


def ragged_bincount(ctx, node, name, args):
    """TextVectorization's multi_hot / count / tf_idf: RaggedBincount(splits, values, size,
    weights) -> [rows, size], as a ScatterND that adds one (or the weight) per token."""
    from onnx import TensorProto
    from tf2onnx import utils
    from tf2onnx.graph_builder import GraphBuilder

    utils.make_sure(ctx.opset >= 16, "RaggedBincount %s: needs opset 16 (ScatterND with reduction)", name)
    splits, values, size, weights = node.input
    dtype = ctx.get_dtype(node.output[0])
    np_dtype = utils.map_onnx_to_numpy_type(dtype)
    i64 = TensorProto.INT64
    splits = ctx.make_node("Cast", [splits], attr={"to": i64}).output[0]
    values = ctx.make_node("Cast", [values], attr={"to": i64}).output[0]
    size = GraphBuilder(ctx).make_unsqueeze({"data": ctx.make_node("Cast", [size], attr={"to": i64}).output[0],
                                             "axes": [0]})
    rows, row_ids = _row_ids(ctx, splits, values)
    # Tokens outside [0, size) are not counted, as in TensorFlow.
    zero = ctx.make_const(utils.make_name("zero"), np.array(0, np.int64)).output[0]
    keep = ctx.make_node("And", [ctx.make_node("GreaterOrEqual", [values, zero]).output[0],
                                 ctx.make_node("Less", [values, size]).output[0]]).output[0]
    indices = ctx.make_node("Concat", [GraphBuilder(ctx).make_unsqueeze({"data": row_ids, "axes": [1]}),
                                       GraphBuilder(ctx).make_unsqueeze({"data": values, "axes": [1]})],
                            attr={"axis": 1}).output[0]
    indices = ctx.make_node("Compress", [indices, keep], attr={"axis": 0}).output[0]
    binary = bool(node.get_attr_value("binary_output", False))
    has_weights = ctx.get_shape(weights) not in ([0], None) and not binary
    if has_weights:
        updates = ctx.make_node("Compress", [weights, keep], attr={"axis": 0}).output[0]
    else:
        ones = ctx.make_node("ConstantOfShape", [ctx.make_node("Shape", [values]).output[0]],
                             attr={"value": _scalar_tensor(np_dtype, 1)}).output[0]
        updates = ctx.make_node("Compress", [ones, keep], attr={"axis": 0}).output[0]
    shape = ctx.make_node("Concat", [rows, size], attr={"axis": 0}).output[0]
    zeros = ctx.make_node("ConstantOfShape", [shape], attr={"value": _scalar_tensor(np_dtype, 0)}).output[0]
    counts = ctx.make_node("ScatterND", [zeros, indices, updates], attr={"reduction": "add"}).output[0]
    node.type = "Min" if binary else "Identity"
    one = ctx.make_const(utils.make_name("one"), np.array(1, np_dtype)).output[0]
    ctx.replace_inputs(node, [counts, one] if binary else [counts])
    for attr in list(node.attr):
        del node.attr[attr]
    return node


def _scalar_tensor(np_dtype, value):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array([value], dtype=np_dtype))


def _row_ids(ctx, splits: str, values: str) -> tuple[str, str]:
    """([rows], each value's row) from ragged row splits: a value at position j is in the row
    of the last split <= j. Quadratic in rows x tokens, which a serving batch keeps small."""
    from onnx import TensorProto
    from tf2onnx import utils
    from tf2onnx.graph_builder import GraphBuilder

    one = ctx.make_const(utils.make_name("one"), np.array([1], np.int64)).output[0]
    big = ctx.make_const(utils.make_name("big"), np.array([np.iinfo(np.int64).max], np.int64)).output[0]
    rows = ctx.make_node("Sub", [ctx.make_node("Shape", [splits]).output[0], one]).output[0]
    ends = GraphBuilder(ctx).make_slice({"data": splits, "starts": one, "ends": big, "axes": [0]})
    positions = ctx.make_node("CumSum", [ctx.make_node("ConstantOfShape", [ctx.make_node("Shape", [values]).output[0]],
                                                       attr={"value": _scalar_tensor(np.int64, 1)}).output[0],
                                         ctx.make_const(utils.make_name("axis"), np.array(0, np.int64)).output[0]],
                              attr={"exclusive": 1}).output[0]
    passed = ctx.make_node("LessOrEqual", [GraphBuilder(ctx).make_unsqueeze({"data": ends, "axes": [0]}),
                                           GraphBuilder(ctx).make_unsqueeze({"data": positions, "axes": [1]})]).output[0]
    passed = ctx.make_node("Cast", [passed], attr={"to": TensorProto.INT64}).output[0]
    row_ids = GraphBuilder(ctx).make_reduce_sum({"data": passed, "axes": [1], "keepdims": 0,
                                                 "noop_with_empty_axes": 1})
    return rows, row_ids


def bucketize(ctx, node, name, args):
    """Discretization: Bucketize(x, boundaries) is the number of boundaries <= x."""
    from onnx import TensorProto
    from tf2onnx import utils
    from tf2onnx.graph_builder import GraphBuilder

    boundaries = np.array(node.get_attr_value("boundaries"), dtype=utils.map_onnx_to_numpy_type(
        ctx.get_dtype(node.input[0])))
    edges = ctx.make_const(utils.make_name(f"{name}_boundaries"), boundaries).output[0]
    expanded = GraphBuilder(ctx).make_unsqueeze({"data": node.input[0], "axes": [-1]})
    reached = ctx.make_node("Cast", [ctx.make_node("GreaterOrEqual", [expanded, edges]).output[0]],
                            attr={"to": TensorProto.INT64}).output[0]
    total = GraphBuilder(ctx).make_reduce_sum({"data": reached, "axes": [-1], "keepdims": 0,
                                               "noop_with_empty_axes": 1})
    node.type = "Cast"
    ctx.replace_inputs(node, [total])
    for attr in list(node.attr):
        del node.attr[attr]
    node.set_attr("to", ctx.get_dtype(node.output[0]))
    return node


def string_equal(ctx, node, name, args):
    """Comparing tokens with one constant string (TextVectorization's mask token "") becomes
    ONNX-ML's LabelEncoder (the constant -> 1, anything else -> 0). onnxruntime-extensions'
    StringEqual, tf2onnx's choice, fails on a batch whose texts hold no token at all ("shape2
    must have less dimensions than shape1"), which an empty request is."""
    from onnx import TensorProto
    from tf2onnx import constants
    from tf2onnx.custom_opsets.string_ops import StringEqual

    constant = next((i for i, x in enumerate(node.inputs) if x.is_const() and x.get_tensor_value(as_list=False).size == 1),
                    None)
    if ctx.get_dtype(node.input[0]) != TensorProto.STRING or constant is None:
        return StringEqual.version_1(ctx, node)
    value = node.inputs[constant].get_tensor_value(as_list=False).reshape(-1)[0]
    value = value.decode("utf-8") if isinstance(value, bytes) else str(value)
    other, output, negate = node.input[1 - constant], node.output[0], node.type == "NotEqual"
    ctx.remove_node(node.name)
    flag = ctx.make_node("LabelEncoder", [other], domain=constants.AI_ONNX_ML_DOMAIN,
                         attr={"keys_strings": [value], "values_int64s": [1], "default_int64": 0}).output[0]
    if negate:
        flag = ctx.make_node("Sub", [ctx.make_const(f"{name}_one", np.array(1, np.int64)).output[0], flag]).output[0]
    ctx.make_node("Cast", [flag], attr={"to": TensorProto.BOOL}, outputs=[output], name=name,
                  shapes=[ctx.get_shape(other)], dtypes=[TensorProto.BOOL])


def ragged_to_tensor(ctx, node, name, args):
    """tf2onnx's RaggedTensorToTensor divides by the longest row's length, which is 0 when no
    row holds a token (a request of empty texts): onnxruntime refuses the division even over
    no elements, and a divisor of at least 1 gives the same (empty) answer. Where it takes
    that length as the maximum over no rows at all, ReduceMax answers the lowest int64, a
    negative dimension: at least 0 is TensorFlow's answer."""
    from tf2onnx.onnx_opset.tensor import RaggedTensorToTensor

    before = {n.name for n in ctx.get_nodes()}
    RaggedTensorToTensor.version_11(ctx, node)
    from tf2onnx import utils

    for added in [n for n in ctx.get_nodes() if n.name not in before and n.type in ("Div", "Mod")]:
        dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(added.input[1]))
        one = ctx.make_const(utils.make_name(f"{added.name}_one"), np.array([1], dtype)).output[0]
        at_least_one = ctx.make_node("Max", [added.input[1], one]).output[0]
        ctx.replace_input(added, added.input[1], at_least_one, 1)
    for added in [n for n in ctx.get_nodes() if n.name not in before and n.type == "ReduceMax"]:
        dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(added.output[0]))
        zero = ctx.make_const(utils.make_name(f"{added.name}_zero"), np.array(0, dtype)).output[0]
        at_least_zero = ctx.insert_new_node_on_output("Max", added.output[0], name=utils.make_name(f"{added.name}_0"))
        ctx.replace_inputs(at_least_zero, [added.output[0], zero])


def handlers(tables: dict) -> dict:
    """tf2onnx's ``custom_op_handlers`` for one conversion (the lookup needs its tables)."""
    return {
        "StringSplitV2": (string_split, []),
        "UnicodeDecode": (unicode_decode, []),
        "UnicodeEncode": (unicode_encode, []),
        "LookupTableFindV2": (functools.partial(lookup, tables=tables), []),
        "RaggedBincount": (ragged_bincount, []),
        "Bucketize": (bucketize, []),
        "Equal": (string_equal, []),
        "NotEqual": (string_equal, []),
        "RaggedTensorToTensor": (ragged_to_tensor, []),
    }
