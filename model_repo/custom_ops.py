"""onnxruntime-extensions' custom-op library (``ai.onnx.contrib``), shared by the converter
(which checks the models it writes) and the gateway (which serves them).

A model that needs the library says so in its ``config.pbtxt``: the parameter
:data:`CONFIG_KEY` is :data:`EXTENSIONS`. Whoever registers the library in onnxruntime's
session options gets its path from :func:`extensions_library`.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
from pathlib import Path

CONFIG_KEY = "custom_op_library"
EXTENSIONS = "onnxruntime_extensions"
KNOWN = (EXTENSIONS,)


def extensions_library() -> str | None:
    """The library's path (None: the package is not installed), loaded first with
    ``RTLD_DEEPBIND`` so that it keeps its own symbols.

    The package is found, not imported: importing it loads the library the ordinary way. In
    a process that loaded TensorFlow before (a converter, a test, a notebook) that binds the
    library's regular-expression engine to TensorFlow's copy, and ``StringRegexReplace``
    then silently replaces nothing (measured: Keras' punctuation strip left "great!" whole,
    parity failed). Loaded first with ``RTLD_DEEPBIND`` it uses its own; onnxruntime's later
    ``dlopen`` of the same file gets this copy."""
    spec = importlib.util.find_spec(EXTENSIONS)
    found = sorted(Path(spec.submodule_search_locations[0]).glob("_extensions_pydll*.so")) if spec else []
    if not found:
        return None
    path = str(found[0])
    _load_deep(path)
    return path


@functools.cache
def _load_deep(path: str) -> ctypes.CDLL:
    return ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL | getattr(os, "RTLD_DEEPBIND", 0))
