"""``tunegate convert --reference-data FILE.npz``: the manifest's ``input_summary``, the
reference the gateway's drift monitor compares live inputs with (:mod:`model_repo.drift`)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from model_repo.drift import InputSummaryError, summarise

from .errors import SourceError


def reference_summary(path: str | Path, input_name: str | None = None) -> dict[str, Any]:
    """The summary of one array of ``path`` (numbers only; blocking): the one named
    ``input_name``, else the file's only array, else the first in the file. The model's
    input is found by this name at serving time; a single-input model needs no name match."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise SourceError(f"--reference-data {path}: not an .npz file (expected np.savez(path, INPUT=array))")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = list(npz.files)
            if not names:
                raise SourceError(f"--reference-data {path}: holds no arrays")
            name = input_name if input_name in names else names[0]
            data = npz[name]
    except (OSError, ValueError) as exc:
        raise SourceError(f"--reference-data {path}: cannot read it: {exc}") from None
    try:
        return summarise(data, input=name if len(names) > 1 or name == input_name else None).to_dict()
    except InputSummaryError as exc:
        raise SourceError(f"--reference-data {path} ({name!r}): {exc.message}") from None
