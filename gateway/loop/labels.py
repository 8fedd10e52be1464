"""What a model's feedback labels must look like, and the one form they are stored in.

A model's *label spec* comes from its first output unless its loop settings say otherwise
(``label_kind``, ``num_classes``, ``label_shape``):

- ``class``: one class id per row, ``0 <= id < num_classes``; the default for a ``[batch, C]``
  floating score output with ``C >= 2``. Sent as any integer datatype, shape ``[rows]`` or
  ``[rows, 1]``; stored as int64 ``[rows]``.
- ``target``: a vector per row shaped like the output's row (a one-hot vector, a distribution,
  a regression target); the default for any other output. Sent as any integer or floating
  datatype, shape ``[rows, *row]``; stored as float32 ``[rows, *row]``. A row of one value is
  a scalar: sent as ``[rows]`` or ``[rows, 1]``, stored as ``[rows]``.

Values must be finite. These are exactly the labels the trainer learns from
(``trainer.objective``): int64 class ids take sparse cross-entropy, float32 rows the output's
size categorical cross-entropy or MSE, one float32 per row for a one-unit output binary
cross-entropy or MSE. One stored form per model means two valid feedbacks can never make
records the reader has to quarantine.

:func:`expect_label` checks the header (datatype, shape) before any data is decoded;
:func:`check_labels` checks the decoded values and returns the stored form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from model_repo import datatypes

from ..core.errors import BadRequest
from .settings import LoopSettings
from ..core.signature import Signature

_INTEGERS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
_FLOATS = ("FP16", "FP32", "FP64")


class LabelTensor(Protocol):
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(frozen=True)
class LabelSpec:
    kind: Literal["class", "target"]
    row_shape: tuple[int, ...]  # per row as stored: () for class ids and one-value targets
    num_classes: int | None = None  # class: ids run from 0 to num_classes - 1

    @property
    def datatypes(self) -> tuple[str, ...]:
        return _INTEGERS if self.kind == "class" else _INTEGERS + _FLOATS

    def shapes(self, rows: int | str = "rows") -> str:
        def shape(*dims: int | str) -> str:
            return "[" + ", ".join(map(str, dims)) + "]"

        return f"{shape(rows)} or {shape(rows, 1)}" if not self.row_shape else shape(rows, *self.row_shape)

    def describe(self, rows: int | str = "rows") -> str:
        if self.kind == "class":
            return (f"class ids: an integer tensor of shape {self.shapes(rows)} with values from 0 to "
                    f"{self.num_classes - 1}")
        return f"targets: a numeric tensor of shape {self.shapes(rows)} with finite values"


def label_spec(signature: Signature, settings: LoopSettings) -> LabelSpec:
    """The model's spec: from the settings where they give one, else from its first output."""
    output = signature.outputs[0] if signature.outputs else None
    # A batching model's dims leave out the batch; a model that does not batch answers one
    # example (its feedback is stored with a leading axis of 1), so its dims are the row.
    row = tuple(output.dims) if output is not None else None
    scores = (row is not None and len(row) == 1 and row[0] >= 2
              and output.datatype in _FLOATS)
    kind = settings.label_kind
    if kind == "auto":
        kind = ("class" if settings.num_classes is not None else
                "target" if settings.label_shape is not None else
                "class" if scores else "target")
    if kind == "class":
        classes = settings.num_classes or (row[0] if scores else None)
        if classes is None:
            raise BadRequest(f"class labels need a number of classes, and the model's output "
                             f"{_shape_of(output)} is no [batch, classes] score matrix: set "
                             "num_classes in the model's loop settings")
        return LabelSpec("class", (), classes)
    shape = tuple(settings.label_shape) if settings.label_shape is not None else row
    if shape is None or any(d < 0 for d in shape):
        raise BadRequest(f"the labels' shape cannot be derived from the model's output {_shape_of(output)}: "
                         "set label_shape (or num_classes) in the model's loop settings")
    return LabelSpec("target", () if shape == (1,) else shape)


def _shape_of(output) -> str:
    return "(none)" if output is None else f"{output.name!r} {output.datatype}{list(output.dims)}"


def expect_label(spec: LabelSpec, datatype: str, shape: list[int] | tuple[int, ...], rows: int | None) -> None:
    """BadRequest unless a label tensor of this header can fit ``spec`` (and ``rows`` rows
    when known); cheap, so it can run before any data is decoded."""
    if datatype not in spec.datatypes:
        raise BadRequest(f"labels have datatype {datatype}; expected {spec.describe()}")
    dims = list(shape)
    if not dims or dims[0] < 1:
        raise BadRequest(f"labels have shape {dims}; expected {spec.describe(rows or 'rows')}")
    per_row = tuple(dims[1:])
    if per_row != spec.row_shape and not (spec.row_shape == () and per_row == (1,)):
        raise BadRequest(f"labels have shape {dims}; expected {spec.describe(rows or dims[0])}")
    if rows is not None and dims[0] != rows:
        raise BadRequest(f"labels have {dims[0]} rows but the inputs have {rows}")


def check_labels(spec: LabelSpec, tensor: LabelTensor, rows: int | None = None) -> np.ndarray:
    """The labels in their stored form (see the module doc), or BadRequest."""
    expect_label(spec, tensor.datatype, tensor.shape, rows)
    count = tensor.shape[0]
    data = np.asarray(tensor.data, dtype=datatypes.from_v2(tensor.datatype).numpy)
    if spec.kind == "class":
        ids = data.reshape(count)
        bad = np.flatnonzero((ids < 0) | (ids >= spec.num_classes))
        if bad.size:
            raise BadRequest(f"label {ids[bad[0]]} (row {bad[0]}) is no class id; expected "
                             f"{spec.describe(count)}")
        return ids.astype(np.int64)
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused below
        values = data.reshape((count, *spec.row_shape)).astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(values.reshape(count, -1)).all(axis=1))
    if bad.size:
        raise BadRequest(f"labels in row {bad[0]} are not finite float32 values; expected "
                         f"{spec.describe(count)}")
    return values
