"""What every loader hands to the rest of the pipeline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]  # batch dimension first, None where variable
    high: int | None = None  # exclusive upper bound for integer inputs (token ids)
    # Values the model knows for this input (a lookup layer's or TextVectorization's
    # vocabulary): parity inputs mix them with out-of-vocabulary ones, so the lookups are
    # exercised on both paths rather than on random values that are all unknown.
    vocabulary: tuple = ()


@dataclass
class Source:
    format: str  # "keras" | "saved_model" | "graphdef"
    origin: str  # the file or object it came from, for messages
    inputs: list[InputSpec]
    output_names: list[str]
    # Runs the original model in TensorFlow: feeds by input name -> outputs by output name.
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    # Returns (frozen GraphDef, tf input tensor names, tf output tensor names,
    # {tf tensor name: meaningful name}, initialized tables) for tf2onnx.
    graph: Callable[[], tuple[Any, list[str], list[str], dict[str, str], dict]]
    # Writes the trainable original under the version's source/ dir; returns the
    # manifest's ``source`` entry (path relative to the version directory).
    save: Callable[[Path], dict[str, Any]]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> int | None:
        return self.details.get("params")
