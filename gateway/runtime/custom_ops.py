"""Custom-op libraries a model's ``config.pbtxt`` asks for (``custom_op_library``).

A model converted with string preprocessing layers runs onnxruntime-extensions' ops
(``ai.onnx.contrib``); the converter says so in the model's config (converters/custom_ops.py
writes the same key). The library is registered in that model's session options only, so a
numeric model's sessions pay nothing for it (docs/preprocessing-layers.md).
"""

from __future__ import annotations

from model_repo.custom_ops import CONFIG_KEY, KNOWN, extensions_library

from ..core.errors import LoadError


def register(options, params: dict[str, str], where: str) -> None:
    """Register the library named by ``params[CONFIG_KEY]`` (if any) in ``options``."""
    wanted = params.get(CONFIG_KEY, "").strip()
    if not wanted:
        return
    if wanted not in KNOWN:
        raise LoadError(f"{where}: parameter {CONFIG_KEY} is {wanted!r}; the gateway knows {', '.join(KNOWN)}")
    path = extensions_library()
    if path is None:
        raise LoadError(f"{where}: the model needs onnxruntime-extensions' custom ops (config parameter "
                        f"{CONFIG_KEY}), which are not installed: pip install onnxruntime-extensions")
    options.register_custom_ops_library(path)
