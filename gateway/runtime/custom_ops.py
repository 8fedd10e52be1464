"""Custom-op libraries a model's ``config.pbtxt`` asks for (``custom_op_library``).

A model converted with string preprocessing layers runs onnxruntime-extensions' ops
(``ai.onnx.contrib``); the converter says so in the model's config (converters/custom_ops.py
writes the same key). The library is registered in that model's session options only, so a
numeric model's sessions pay nothing for it (docs/preprocessing-layers.md).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
from pathlib import Path

from ..core.errors import LoadError

CONFIG_KEY = "custom_op_library"
EXTENSIONS = "onnxruntime_extensions"
KNOWN = (EXTENSIONS,)


def register(options, params: dict[str, str], where: str) -> None:
    """Register the library named by ``params[CONFIG_KEY]`` (if any) in ``options``."""
    wanted = params.get(CONFIG_KEY, "").strip()
    if not wanted:
        return
    if wanted not in KNOWN:
        raise LoadError(f"{where}: parameter {CONFIG_KEY} is {wanted!r}; the gateway knows {', '.join(KNOWN)}")
    options.register_custom_ops_library(extensions_library(where))


def extensions_library(where: str) -> str:
    """The library's path, loaded first with ``RTLD_DEEPBIND`` so that it keeps its own
    symbols. The package is found, not imported (importing it loads the library the ordinary
    way): in a process that loaded TensorFlow before (a test, a notebook), the ordinary load
    binds the library's regular expressions to TensorFlow's copy and ``StringRegexReplace``
    silently replaces nothing (measured)."""
    spec = importlib.util.find_spec(EXTENSIONS)
    found = sorted(Path(spec.submodule_search_locations[0]).glob("_extensions_pydll*.so")) if spec else []
    if not found:
        raise LoadError(f"{where}: the model needs onnxruntime-extensions' custom ops (config parameter "
                        f"{CONFIG_KEY}), which are not installed: pip install onnxruntime-extensions")
    path = str(found[0])
    _load_deep(path)
    return path


@functools.cache
def _load_deep(path: str) -> ctypes.CDLL:
    return ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL | getattr(os, "RTLD_DEEPBIND", 0))
