"""TensorFlow SavedModel directories (``tf.saved_model.save`` of a ``tf.Module``, or a Keras
``model.export``): one signature is converted, the default one unless ``--signature``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..errors import SourceError, first_line
from .base import InputSpec, Source

DEFAULT_SIGNATURE = "serving_default"
SOURCE_SUBDIR = "saved_model"


def pick_signature(signatures, requested: str | None, origin: str) -> str:
    names = sorted(k for k in signatures.keys() if not k.startswith("_"))
    if requested is not None:
        if requested not in names:
            raise SourceError(f"{origin}: no signature {requested!r}; the SavedModel has {names or 'none'}")
        return requested
    if DEFAULT_SIGNATURE in names:
        return DEFAULT_SIGNATURE
    if len(names) == 1:
        return names[0]
    if not names:
        raise SourceError(f"{origin}: the SavedModel has no signatures; save it with "
                          "tf.saved_model.save(obj, dir, signatures=...) so its inputs are known")
    raise SourceError(f"{origin}: several signatures and no {DEFAULT_SIGNATURE!r}; "
                      f"pick one with --signature ({', '.join(names)})")


def frozen_graph(path: Path, signature: str):
    """Freeze one signature of a SavedModel for tf2onnx, with its input and output tensors
    renamed to the signature's argument and output keys."""
    from tf2onnx import tf_loader

    graph_def, inputs, outputs, tables, renames = tf_loader.from_saved_model(
        str(path), None, None, tag=["serve"], signatures=[signature],
        return_initialized_tables=True, return_tensors_to_rename=True)
    return graph_def, inputs, outputs, renames, tables


def load_saved_model(path: Path, signature: str | None = None) -> Source:
    import tensorflow as tf

    origin = str(path)
    try:
        loaded = tf.saved_model.load(origin)
    except Exception as exc:  # TF raises many types for a damaged SavedModel
        raise SourceError(f"{origin}: not a loadable TensorFlow SavedModel: {first_line(exc)}") from None
    name = pick_signature(loaded.signatures, signature, origin)
    function = loaded.signatures[name]
    _, kwargs = function.structured_input_signature
    inputs = [InputSpec(key, np.dtype(spec.dtype.as_numpy_dtype), tuple(spec.shape.as_list()))
              for key, spec in sorted(kwargs.items())]
    output_names = sorted(function.structured_outputs.keys())

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = function(**{k: tf.constant(v) for k, v in feeds.items()})
        return {k: v.numpy() for k, v in result.items()}

    def save(source_dir: Path) -> dict:
        shutil.copytree(path, source_dir / SOURCE_SUBDIR)
        return {"format": "saved_model", "path": f"source/{SOURCE_SUBDIR}", "signature": name}

    params = sum(int(np.prod(v.shape)) for v in function.variables)
    return Source(
        format="saved_model", origin=origin, inputs=inputs, output_names=output_names, run=run,
        graph=lambda: frozen_graph(path, name), save=save,
        details={"signature": name, "params": params, "_keep_alive": loaded},
    )
