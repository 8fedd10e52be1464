"""Features as the trainer holds them: one array for a model with one input, or a dict of
arrays, one per input name, for a model with several (a structured-data model's numeric,
string and integer columns).

The names are the model's input names as the converter gives them to the ONNX graph
(:func:`converters.sources.keras.input_name`), which are the names the gateway stores feedback
under, so a feedback store's inputs feed the model by name. Every helper here takes either
form, so the loop, the objective and the data readers need not know which one they hold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Union

import numpy as np

from .errors import DataError

Features = Union[np.ndarray, dict[str, np.ndarray]]


class InputNames(list):
    """A model's several input names, as the readers are asked for them: every one is read,
    by name, into a dict (a plain list of ``--features`` names one input's columns instead)."""


def several_inputs_message(where, inputs: Sequence[str]) -> str:
    return (f"{where}: .npz, CSV and Parquet files feed a model with one input; this model takes "
            f"{len(inputs)} ({', '.join(inputs)}), which the trainer reads by name from a feedback "
            "store (--data feedback:)")


def rows(x: Features) -> int:
    return int(next(iter(x.values())).shape[0] if isinstance(x, dict) else x.shape[0])


def take(x: Features, index) -> Features:
    """The rows at ``index`` (an index array or a slice) of every input."""
    return {k: v[index] for k, v in x.items()} if isinstance(x, dict) else x[index]


def concat(parts: Sequence[Features]) -> Features:
    """Rows of several sources one after the other; DataError when they do not agree."""
    if not any(isinstance(p, dict) for p in parts):
        return np.concatenate(parts)
    names = set(parts[0]) if isinstance(parts[0], dict) else None
    if any(not isinstance(p, dict) or set(p) != names for p in parts):
        found = [sorted(p) if isinstance(p, dict) else "one array" for p in parts]
        raise DataError(f"data sources do not hold the same inputs: {found}")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def digest_into(h: hashlib._Hash, x: Features) -> None:
    """Feed ``x``'s content to a hash: one array as before (a single-input digest is unchanged),
    several by name, in name order (the order the store gives them in is no part of the data)."""
    for name, array in (sorted(x.items()) if isinstance(x, dict) else [(None, x)]):
        if name is not None:
            h.update(name.encode() + b"\0")
        h.update(f"{array.dtype.str}{array.shape}".encode())
        h.update(content(array))


def content(array: np.ndarray) -> bytes:
    """The bytes a digest covers: an object array's own bytes are pointers, different in every
    process, so text counts as its UTF-8, each element after its length."""
    if not array.dtype.hasobject:
        return np.ascontiguousarray(array).tobytes()
    encoded = [str(t).encode() for t in array.reshape(-1)]
    return b"".join(len(e).to_bytes(8, "little") + e for e in encoded)


def input_names(model) -> list[str]:
    """The model's input names, in its call order, as the ONNX graph and the feedback store have them."""
    from converters.sources.keras import input_name

    return [input_name(t) for t in model.inputs]


def model_feed(model, x: Features):
    """What ``model(...)`` takes: the one array, or the inputs' arrays in the model's order
    (by name, not by the dict's order: a store lists its inputs sorted)."""
    if not isinstance(x, dict):
        return x
    return [x[name] for name in input_names(model)]


def parity_sample(x: Features, count: int) -> dict[str, np.ndarray]:
    """The converter's parity sample: its first ``count`` rows under the input names
    (``x`` for one input: the converter maps one array to the one input)."""
    head = take(x, slice(0, count))
    return head if isinstance(head, dict) else {"x": head}


def numeric_part(x: Features) -> tuple[str | None, np.ndarray] | None:
    """The input a drift reference summarises: the one array if numeric, else the first numeric
    input by name (text and lookup ids have no numeric drift: docs/preprocessing-layers.md)."""
    if not isinstance(x, dict):
        return None if x.dtype.kind in "OSU" else (None, x)
    return next(((k, v) for k, v in sorted(x.items()) if v.dtype.kind == "f"), None)
