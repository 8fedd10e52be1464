"""Loaders, one per source format. Each turns a file (or an in-memory Keras model) into a
:class:`~converters.sources.base.Source`: what the inputs are, how to run the original in
TensorFlow, how to get a TensorFlow graph for tf2onnx, and how to keep the original."""

from .base import InputSpec, Source
from .detect import detect_format, load_source

__all__ = ["InputSpec", "Source", "detect_format", "load_source"]
