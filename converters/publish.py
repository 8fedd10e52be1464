"""The library entry points: what the trainer and ``tunegate convert`` call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model_repo import Manifest, Repository

from .errors import stage
from .pipeline import Options, convert_and_publish


def publish_keras_model(model, repo: Repository, name: str, *, parent_version: int | None = None,
                        sample: dict[str, np.ndarray] | None = None, atol: float = 1e-4, rtol: float = 1e-3,
                        opset: int | None = None, max_batch_size: int | None = None,
                        manifest_fields: dict | None = None,
                        extra_files: dict[str, str | Path] | None = None,
                        class_names: list[str] | None = None) -> Manifest:
    """Convert an in-memory Keras model, check parity and publish it as ``name``'s next version.

    ``source/model.keras`` holds the model as given (for further fine-tuning); ``manifest.json``
    holds the parity report; ``extra_files`` (relative path in the version -> local file) are
    copied in beside them; ``class_names`` become the scoring output's label file. Raises a :class:`~converters.errors.ConversionError` (ParityError
    when the ONNX answers differ beyond ``atol``/``rtol``) and publishes nothing on failure."""
    options = Options(opset=opset, atol=atol, rtol=rtol, sample=sample, max_batch_size=max_batch_size,
                      parent_version=parent_version, manifest_fields=dict(manifest_fields or {}),
                      extra_files={rel: Path(src) for rel, src in (extra_files or {}).items()},
                      class_names=class_names)
    with stage("load"):
        from .sources.keras import keras_source

        source = keras_source(model)
    return convert_and_publish(source, repo, name, options)


def publish_file(path: str | Path, repo: Repository, name: str, *, format: str | None = None,
                 signature: str | None = None, inputs: list[str] | None = None, outputs: list[str] | None = None,
                 safe_mode: bool = True, custom_objects: dict[str, Any] | None = None,
                 options: Options | None = None) -> Manifest:
    """Convert a model file or SavedModel directory and publish it (``tunegate convert``)."""
    with stage("load"):
        from .sources import load_source

        source = load_source(path, format=format, signature=signature, inputs=inputs, outputs=outputs,
                             safe_mode=safe_mode, custom_objects=custom_objects)
    return convert_and_publish(source, repo, name, options or Options())
