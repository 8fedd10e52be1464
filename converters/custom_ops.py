"""String ops through onnxruntime-extensions (``ai.onnx.contrib``).

tf2onnx maps TensorFlow's string ops (``StringSplitV2``, ``StaticRegexReplace``, string
``Equal``, ``StringToHashBucketFast``, ...) onto onnxruntime-extensions' custom ops when the
contrib opset is asked for; onnxruntime runs them only with that library registered in the
session options. A converted model that uses them says so in its ``config.pbtxt``
(:data:`CONFIG_KEY`), so the gateway registers the library for that model alone and numeric
models pay nothing (docs/preprocessing-layers.md).
"""

from __future__ import annotations

from model_repo.custom_ops import CONFIG_KEY, EXTENSIONS, extensions_library

from .errors import InvalidModelError

CONTRIB_DOMAIN = "ai.onnx.contrib"


def _nodes(graph):
    """Every node, those in Loop/If/Scan bodies included."""
    import onnx

    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)
            for sub in attr.graphs:
                yield from _nodes(sub)


def needs_extensions(model) -> bool:
    return any(node.domain == CONTRIB_DOMAIN for node in _nodes(model.graph))


def tidy(model) -> None:
    """After tf2onnx: drop the contrib opset when no node uses it (so a numeric model looks
    exactly as it did before string support), and give ``StringNormalizer`` the "C" locale.
    TensorFlow's ``tf.strings.lower`` lowercases ASCII only, which is what the "C" locale does;
    ONNX's default, en_US.UTF-8, lowercases every script (``É`` -> ``é``, a parity failure) and
    is missing from slim images, where onnxruntime then refuses to load the model."""
    from onnx import helper

    if not needs_extensions(model):
        kept = [o for o in model.opset_import if o.domain != CONTRIB_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    for node in _nodes(model.graph):
        if node.op_type == "StringNormalizer" and node.domain in ("", "ai.onnx"):
            if not any(a.name == "locale" for a in node.attribute):
                node.attribute.append(helper.make_attribute("locale", "C"))
    _output_shapes(model)


def _output_shapes(model) -> None:
    """tf2onnx's table lookup (CategoryMapper) can leave a graph output with no shape at all,
    which onnx.checker refuses; ONNX's shape inference knows the op and fills it in."""
    import onnx

    if all(o.type.tensor_type.HasField("shape") for o in model.graph.output):
        return
    inferred = {o.name: o for o in onnx.shape_inference.infer_shapes(model).graph.output}
    for output in model.graph.output:
        found = inferred.get(output.name)
        if not output.type.tensor_type.HasField("shape") and found is not None \
                and found.type.tensor_type.HasField("shape"):
            output.type.tensor_type.shape.CopyFrom(found.type.tensor_type.shape)


def library_path() -> str:
    """onnxruntime-extensions' shared library (model_repo.custom_ops), or a clear error."""
    path = extensions_library()
    if path is None:
        raise InvalidModelError("the ONNX model uses onnxruntime-extensions' string ops (ai.onnx.contrib) "
                                "but the package is not installed: pip install onnxruntime-extensions")
    return path


def session_options(extensions: bool):
    """onnxruntime session options for checking a converted model, with the custom-op
    library registered only when the model needs it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if extensions:
        options.register_custom_ops_library(library_path())
    return options


def mark_config(config, extensions: bool) -> None:
    if extensions:
        config.parameters[CONFIG_KEY].string_value = EXTENSIONS
