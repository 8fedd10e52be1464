"""Triton's classification extension: an output asked for with ``classification: N`` is
answered as BYTES ``"<value>:<index>[:<label>]"``, the N highest values of each batch row,
highest first (``server/src/classification.cc``).

The value is printed as C++'s ``std::to_string`` prints it (``%f`` for floats, ``%d`` for
integers); a label comes from the output's ``label_filename`` when that file has a
non-empty line for the index. Ties keep the lower index first.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from model_repo import ModelConfig
from model_repo.config import label_files, read_labels
from model_repo.errors import ConfigError

from .errors import BadRequest, InferenceError, brief
from .types import OutputRequest

# Triton's TopkClassifications handles these and refuses the rest.
SUPPORTED = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32", "FP64"})


@dataclass
class ClassifiedOutput(OutputRequest):
    """A requested output to be answered as its top ``class_count`` classes."""

    class_count: int = 0


def requested_output(name: str, binary: bool | None, placement, class_count) -> OutputRequest:
    """What a front end builds for one requested output (``class_count`` as the client sent
    it: None or 0 for the tensor itself)."""
    if class_count is None or class_count == 0:
        return OutputRequest(name, binary, placement)
    if not isinstance(class_count, int) or isinstance(class_count, bool) or class_count < 0:
        raise BadRequest(f"output {brief(name)}: classification must be a positive integer, got {brief(class_count)}")
    return ClassifiedOutput(name, binary, placement, class_count=class_count)


def check(output: OutputRequest, datatype: str) -> None:
    """Before the request runs: can this output be classified?"""
    if isinstance(output, ClassifiedOutput) and datatype not in SUPPORTED:
        raise BadRequest(f"output {brief(output.name)}: class result not available for output due to "
                         f"unsupported type '{datatype}'")


def classify(array: np.ndarray, count: int, batched: bool, labels: list[str] | None = None) -> np.ndarray:
    """The top ``count`` classes of each row of ``array`` (shape [batch, count] when
    ``batched``, else [count]) as an object array of bytes."""
    shape = array.shape if batched else (1, *array.shape)
    rows = array.reshape(shape[0], int(np.prod(shape[1:], dtype=np.int64)))
    k = min(count, rows.shape[1])
    # Highest first, ties by lower index: a stable ascending sort of the reversed rows, reversed.
    order = rows.shape[1] - 1 - np.argsort(rows[:, ::-1], axis=1, kind="stable")[:, ::-1][:, :k]
    floats = rows.dtype.kind == "f"
    out = np.empty((rows.shape[0], k), dtype=object)
    for r, (values, indices) in enumerate(zip(rows, order)):
        for c, index in enumerate(indices.tolist()):
            value = values[index]
            text = f"{float(value):f}:{index}" if floats else f"{int(value)}:{index}"
            if labels is not None and index < len(labels) and labels[index]:
                text = f"{text}:{labels[index]}"
            out[r, c] = text.encode()
    return out if batched else out.reshape(k)


class LabelBook:
    """Each loaded version's labels, read from its model directory on first use (off the
    event loop), kept while that version serves."""

    def __init__(self, model_dir) -> None:
        self._model_dir = model_dir  # model name -> its directory
        self._labels: weakref.WeakKeyDictionary[object, dict[str, list[str]]] = weakref.WeakKeyDictionary()

    async def labels(self, owner: object, model: str, config: ModelConfig) -> dict[str, list[str]]:
        found = self._labels.get(owner)
        if found is None:
            files = label_files(config)
            found = await asyncio.to_thread(self._read, Path(self._model_dir(model)), files) if files else {}
            self._labels[owner] = found
        return found

    @staticmethod
    def _read(model_dir: Path, files: dict[str, str]) -> dict[str, list[str]]:
        try:
            return {output: read_labels(model_dir, filename) for output, filename in files.items()}
        except ConfigError as exc:
            raise InferenceError(exc.message) from None
