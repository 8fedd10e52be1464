"""Keras 3 models: ``.keras`` archives, legacy ``.h5`` files, or a model in memory.

tf2onnx's ``from_keras`` breaks on Keras 3 (tf2onnx#2329), so the model is exported as a
SavedModel with one endpoint whose arguments and outputs carry the Keras names, and that
SavedModel is converted (docs/architecture.md, "Facts the code relies on": the one path that
worked on every model measured)."""

from __future__ import annotations

import contextlib
import importlib
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CustomObjectError, SourceError, first_line
from .base import InputSpec, Source
from .saved_model import frozen_graph

SOURCE_FILE = "model.keras"
_ENDPOINT = "serve"


def load_custom_objects(specs: list[str] | None) -> dict[str, Any]:
    """``module:attr`` strings -> {name: object}, registered under the attribute name and
    the object's own ``__name__`` (which is what a saved config refers to)."""
    objects: dict[str, Any] = {}
    for spec in specs or []:
        module_name, _, attr = spec.partition(":")
        if not module_name or not attr:
            raise SourceError(f"--custom-objects {spec!r}: expected MODULE:ATTR, e.g. mypkg.layers:MyLayer")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise SourceError(f"--custom-objects {spec!r}: cannot import it: {exc}") from None
        objects[attr] = obj
        objects[getattr(obj, "__name__", attr)] = obj
    return objects


def load_keras_file(path: Path, *, safe_mode: bool = True, custom_objects: dict[str, Any] | None = None) -> Source:
    import keras

    try:
        model = keras.saving.load_model(path, custom_objects=custom_objects, compile=False, safe_mode=safe_mode)
    except Exception as exc:  # Keras raises TypeError/ValueError/OSError/KeyError for bad files
        raise _explain_load_failure(path, exc) from None
    if not isinstance(model, keras.Model):
        raise SourceError(f"{path}: holds a {type(model).__name__}, expected a Keras Model")
    return keras_source(model, origin=str(path))


def _explain_load_failure(path: Path, exc: Exception) -> Exception:
    text = str(exc)
    missing = (re.search(r"Could not locate (?:class|function) '([^']+)'", text)
               or re.search(r"Unknown (?:layer|object|activation|loss|metric)[^']*'([^']+)'", text))
    if missing:
        name = missing.group(1)
        return CustomObjectError(
            f"{path}: the model uses a custom object {name!r} that Keras cannot find; "
            f"supply it with --custom-objects MODULE:{name}", name=name)
    if "safe_mode" in text or "unsafe" in text.lower():
        return SourceError(f"{path}: loading it would run code saved inside the file (e.g. a Lambda layer), "
                           "which safe mode refuses; pass --unsafe only if you trust the file")
    return SourceError(f"{path}: not a loadable Keras model ({type(exc).__name__}: {first_line(exc)}); "
                       "expected a Keras 3 .keras archive or a Keras .h5 file")


def as_functional(model):
    """Sequential -> Functional with the same layers, so inputs/outputs are well defined."""
    import keras

    if isinstance(model, keras.Sequential):
        if not model.built or not getattr(model, "inputs", None):
            raise SourceError("the Sequential model has no known input shape; build it with "
                              "keras.Input(shape=...) (or input_shape=) before converting")
        return keras.Model(model.inputs, model.outputs, name=model.name)
    return model


@contextlib.contextmanager
def cpu_rnn_kernels(model):
    """With a GPU visible, Keras traces LSTM/GRU to CudnnRNNV3, which tf2onnx cannot convert
    (docs/architecture.md); tracing with ``use_cudnn=False`` gives the generic loop it turns into ONNX
    LSTM/Loop, the same graph as on a CPU-only host. The model is left as it was."""
    changed = []
    for layer in model._flatten_layers():
        if getattr(layer, "use_cudnn", False) in ("auto", True):
            changed.append((layer, layer.use_cudnn))
            layer.use_cudnn = False
    try:
        yield
    finally:
        for layer, value in changed:
            layer.use_cudnn = value


def _output_names(model) -> list[str]:
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(model.outputs):
        names = [t.name for t in model.outputs]
    return names


def _int_high(model) -> int | None:
    """Token ids must stay below every Embedding's vocabulary size."""
    import keras

    sizes = [layer.input_dim for layer in model._flatten_layers() if isinstance(layer, keras.layers.Embedding)]
    return min(sizes) if sizes else None


def vocabularies(model) -> tuple[tuple, tuple]:
    """(text values, integer values) the model's lookup layers know, for parity inputs."""
    from ..preprocessing import lookup_vocabularies

    return lookup_vocabularies(model)


def input_dtype(tensor) -> np.dtype:
    """numpy's dtype for a Keras input. Keras calls text "string", which numpy does not know;
    numpy (and onnxruntime's binding, and TensorFlow's ``tf.constant``) hold text as objects."""
    import keras

    name = keras.backend.standardize_dtype(tensor.dtype)
    return np.dtype(object) if name == "string" else np.dtype(name)


def input_name(tensor) -> str:
    """The InputLayer's name. Keras 3 names the tensor itself ``keras_tensor_N`` unless
    ``keras.Input(name=...)`` was given (keras.applications models, for one, do not)."""
    history = getattr(tensor, "_keras_history", None)
    layer = history[0] if history else None
    return getattr(layer, "name", None) or tensor.name


def keras_source(model, origin: str = "<keras.Model>") -> Source:
    import keras
    import tensorflow as tf

    from ..preprocessing import refuse_unsupported

    original = model
    model = as_functional(model)
    refuse_unsupported(model)  # before any work: a refused layer costs no tracing
    high = _int_high(model)
    words, numbers = vocabularies(model)
    inputs = []
    for tensor in model.inputs:
        dtype = input_dtype(tensor)
        shape = (None,) + tuple(tensor.shape[1:])
        vocabulary = words if dtype.kind == "O" else numbers if dtype.kind in "iu" else ()
        inputs.append(InputSpec(input_name(tensor), dtype, shape, high if dtype.kind in "iu" else None,
                                vocabulary))
    output_names = _output_names(model)
    if len(set(output_names)) != len(output_names):
        raise SourceError(f"{origin}: output names are not unique ({output_names}); name the output layers")

    def call(*args):
        result = model(list(args) if len(args) > 1 else args[0], training=False)
        result = result if isinstance(result, (list, tuple)) else [result]
        return dict(zip(output_names, result))

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = call(*[tf.constant(feeds[spec.name]) for spec in inputs])
        return {k: np.asarray(v) for k, v in result.items()}

    def graph():
        signature = [tf.TensorSpec(spec.shape, tf.string if spec.dtype.kind == "O" else tf.as_dtype(spec.dtype),
                                   name=spec.name) for spec in inputs]
        with tempfile.TemporaryDirectory(prefix="tunegate-export-") as tmp:
            with cpu_rnn_kernels(model):
                archive = keras.export.ExportArchive()
                archive.track(model)
                archive.add_endpoint(_ENDPOINT, call, input_signature=signature)
                archive.write_out(tmp, verbose=False)
            return frozen_graph(Path(tmp), _ENDPOINT)

    def save(source_dir: Path) -> dict:
        source_dir.mkdir(parents=True, exist_ok=True)
        original.save(source_dir / SOURCE_FILE)
        return {"format": "keras", "path": f"source/{SOURCE_FILE}"}

    return Source(format="keras", origin=origin, inputs=inputs, output_names=output_names, run=run,
                  graph=graph, save=save, details={"params": int(model.count_params()), "model": original})
