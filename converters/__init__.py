"""Keras and TensorFlow models -> ONNX, checked for parity, published to a model repository.

Importing this package loads neither TensorFlow nor tf2onnx; they are imported when a
conversion runs. Errors are in :mod:`converters.errors`.
"""

from .errors import (
    ConversionError,
    CustomObjectError,
    InvalidModelError,
    ParityError,
    SourceError,
    UnsupportedLayerError,
    UnsupportedOpError,
)
from .pipeline import Options
from .publish import publish_file, publish_keras_model

__all__ = [
    "ConversionError", "CustomObjectError", "InvalidModelError", "Options", "ParityError",
    "SourceError", "UnsupportedLayerError", "UnsupportedOpError", "publish_file", "publish_keras_model",
]
