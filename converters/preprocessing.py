"""Keras preprocessing layers: which convert, which are refused before any work.

The survey behind the rules is docs/preprocessing-layers.md (each layer and configuration
converted through the same Keras -> SavedModel -> tf2onnx path, parity measured). A layer
whose configuration cannot be expressed in ONNX is refused at load time, in one line naming
the layer and what to do, instead of failing minutes later in tf2onnx with an op name the
user never wrote.
"""

from __future__ import annotations

from .errors import UnsupportedLayerError

MOVE_OUT = "move the layer out of the model (run it in the client, on the inputs it sends)"


def _layers(model):
    return list(model._flatten_layers(include_self=False))


def lookup_vocabularies(model) -> tuple[tuple, tuple]:
    """(text values, integer values) known to the model's TextVectorization, StringLookup and
    IntegerLookup layers, without their mask and OOV tokens."""
    import keras

    words: list = []
    numbers: list = []
    for layer in _layers(model):
        if isinstance(layer, keras.layers.TextVectorization | keras.layers.StringLookup):
            words += [w for w in layer.get_vocabulary(include_special_tokens=False) if isinstance(w, str)]
        elif isinstance(layer, keras.layers.IntegerLookup):
            numbers += [int(v) for v in layer.get_vocabulary(include_special_tokens=False)]
    return tuple(dict.fromkeys(words)), tuple(dict.fromkeys(numbers))


def _why_refused(layer) -> str | None:
    """Why ``layer`` cannot be converted, or None when it can."""
    import keras

    if isinstance(layer, keras.layers.TextVectorization):
        return _text_vectorization(layer)
    if isinstance(layer, keras.layers.StringLookup | keras.layers.IntegerLookup):
        if layer.num_oov_indices > 1:
            return (f"num_oov_indices={layer.num_oov_indices} hashes unknown values into several buckets with "
                    "TensorFlow's FarmHash, which onnxruntime-extensions computes differently (parity fails); "
                    "use num_oov_indices=1, or")
    if isinstance(layer, keras.layers.Hashing):
        return ("TensorFlow's FarmHash fingerprint has no equal in ONNX or onnxruntime-extensions (its "
                "StringToHashBucketFast answers other buckets, parity fails; a salt needs a keyed hash neither "
                "has); use a StringLookup/IntegerLookup over a vocabulary instead, or")
    return None


def _text_vectorization(layer) -> str | None:
    if callable(layer._standardize) or callable(layer._split):
        return "a custom standardize or split function is Python code, which ONNX cannot hold;"
    ngrams = layer.get_config().get("ngrams")
    if ngrams is not None:
        return (f"ngrams={ngrams} traces to TensorFlow's StringNGrams, which neither ONNX nor "
                "onnxruntime-extensions has; drop ngrams, or")
    return None


def refuse_unsupported(model) -> None:
    """Raise :class:`UnsupportedLayerError` (exit 4) naming the first layers that cannot be
    converted, with what to do."""
    refused = [(layer, why) for layer in _layers(model) if (why := _why_refused(layer))]
    if refused:
        named = "; ".join(f"{type(layer).__name__} {layer.name!r}: {why} {MOVE_OUT}" for layer, why in refused)
        raise UnsupportedLayerError(f"cannot convert {named}",
                                    layers=[layer.name for layer, _ in refused])
