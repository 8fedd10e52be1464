"""Which loader a path needs, decided from what the file is, not only its name."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from ..errors import SourceError

FORMATS = ("keras", "saved_model", "graphdef")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def detect_format(path: Path) -> str:
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return "saved_model"
        raise SourceError(f"{path}: a directory but not a TensorFlow SavedModel (no saved_model.pb)")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise SourceError(f"{path}: corrupt .keras file (a Keras 3 archive is a zip file)")
        return "keras"
    if suffix in (".h5", ".hdf5"):
        with path.open("rb") as f:
            if f.read(8) != _HDF5_MAGIC:
                raise SourceError(f"{path}: corrupt .h5 file (no HDF5 signature); expected a model saved "
                                  "with model.save('x.h5')")
        return "keras"
    if suffix == ".pb":
        return "graphdef"
    raise SourceError(f"{path}: unknown model format; expected a .keras or .h5 Keras file, a SavedModel "
                      "directory, or a frozen GraphDef .pb")


def load_source(path: str | Path, *, format: str | None = None, signature: str | None = None,
                inputs: list[str] | None = None, outputs: list[str] | None = None,
                safe_mode: bool = True, custom_objects: dict[str, Any] | None = None):
    path = Path(path)
    kind = format or detect_format(path)
    if kind == "keras":
        from .keras import load_keras_file
        return load_keras_file(path, safe_mode=safe_mode, custom_objects=custom_objects)
    if kind == "saved_model":
        from .saved_model import load_saved_model
        return load_saved_model(path, signature)
    if kind == "graphdef":
        from .graphdef import load_graphdef
        return load_graphdef(path, inputs, outputs)
    raise SourceError(f"unknown --format {kind!r}; expected one of {', '.join(FORMATS)}")
