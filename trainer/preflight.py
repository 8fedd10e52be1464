"""The training data, checked by ``tunegate finetune`` before it starts horovodrun.

A rank finds a wrong file only after TensorFlow and Horovod have started, and its error
then arrives inside horovodrun's own traceback. These checks read only what is cheap (the
arrays' names, shapes and types in an ``.npz``'s headers, a table's schema, the model's
``config.pbtxt``) and say in one line what was found, what was expected and which flag
picks other names. They follow :mod:`trainer.data`'s naming rules; the ranks still check
everything (this module never reads the data itself).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .data import FEEDBACK_SCHEME, TABLE_SUFFIXES, is_parquet_dir, npz_names
from .errors import DataError
from .features import several_inputs_message

_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def check_data(paths: Sequence[str], *, model: str, features: Sequence[str] | None = None,
               label: str | None = None, model_input: tuple[int, ...] | None = None,
               inputs: Sequence[str] | None = None) -> None:
    """Raise :class:`DataError` for the first data path a rank would refuse.

    ``model_input`` is the model's input shape per example (-1 for any size), if known;
    ``inputs`` its input names, if known (a model with several trains from feedback stores only)."""
    for spec in paths:
        path = Path(spec)
        if spec.startswith(FEEDBACK_SCHEME) or (path.is_dir() and not is_parquet_dir(path)):
            continue  # a feedback store: its reader checks its own records
        if not path.exists():
            raise DataError(f"data file not found: {path}")
        if inputs is not None and len(inputs) > 1:
            raise DataError(several_inputs_message(path, inputs))
        suffix = path.suffix.lower()
        if suffix == ".npz":
            per_example = _check_npz(path, features, label)
        elif suffix in TABLE_SUFFIXES:
            per_example = _check_table(path, features, label or "label")
        else:
            raise DataError(f"{path}: unsupported data format {suffix!r} "
                            "(use .npz, .csv, .parquet or a feedback store)")
        check_fits(path, per_example, model, model_input)


def check_fits(where, per_example: tuple[int, ...] | None, model: str,
               model_input: tuple[int, ...] | None) -> None:
    """Raise :class:`DataError` when features of ``per_example`` shape cannot feed the model."""
    if model_input is not None and per_example is not None and not _fits(per_example, model_input):
        raise DataError(f"{where}: features of shape {per_example} per example do not fit the input "
                        f"of model {model!r}, {_shape(model_input)}")


def model_input_names(repo, model: str) -> list[str] | None:
    """The model's input names from its ``config.pbtxt`` (None if unknown)."""
    config = _config(repo, model)
    return None if config is None else [i.name for i in config.input]


def _config(repo, model: str):
    from model_repo import RepositoryError

    try:
        return repo.read_config(model)
    except RepositoryError:
        return None  # the ranks load the Keras source itself and will say what is wrong


def model_input_shape(repo, model: str) -> tuple[int, ...] | None:
    """The model's one input's shape per example from its ``config.pbtxt`` (None if unknown)."""
    config = _config(repo, model)
    if config is None or len(config.input) != 1:
        return None
    dims = tuple(int(d) for d in config.input[0].dims)
    return dims if config.max_batch_size > 0 else dims[1:]


def _fits(per_example: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    return len(per_example) == len(expected) and all(e in (-1, a) for a, e in zip(per_example, expected))


def _shape(dims: tuple[int, ...]) -> str:
    return "(" + ", ".join("?" if d == -1 else str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


# ------------------------------------------------------------------------ .npz
def npz_arrays(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Every array's (shape, dtype) in an ``.npz``, read from the headers, not the data."""
    arrays: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    reader = _HEADER_READERS.get(version)
                    if reader is None:  # a newer header format: read this one array after all
                        with np.load(path, allow_pickle=False) as npz:
                            array = npz[info.filename[:-4]]
                        shape, dtype = array.shape, array.dtype
                    else:
                        shape, _, dtype = reader(f)
                arrays[info.filename[:-4]] = (tuple(shape), np.dtype(dtype))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise DataError(f"cannot read {path}: not a NumPy .npz archive ({exc})") from None
    return arrays


def _check_npz(path: Path, features: Sequence[str] | None, label: str | None) -> tuple[int, ...] | None:
    arrays = npz_arrays(path)
    names, label = npz_names(arrays, features, label)
    missing = [n for n in [*names, label] if n not in arrays]
    if missing:
        found = ", ".join(f"{n!r} {_shape(s)} {d}" for n, (s, d) in arrays.items()) or "no arrays"
        raise DataError(f"{path}: no array named {', '.join(map(repr, missing))}; it has {found}. "
                        f"Expected features {_quote(names)} and labels {label!r}; "
                        f"{_npz_hint(arrays, features, label)}")
    for name in [*names, label]:
        shape, dtype = arrays[name]
        if dtype.kind not in "biuf":
            raise DataError(f"{path}: array {name!r} holds {dtype}, not numbers")
        if not shape:
            raise DataError(f"{path}: array {name!r} is a scalar, expected one row per example")
    rows = {n: arrays[n][0][0] for n in [*names, label]}
    if len(set(rows.values())) > 1:
        raise DataError(f"{path}: arrays differ in their number of rows: "
                        + ", ".join(f"{n!r} {r}" for n, r in rows.items()))
    if rows[label] == 0:
        raise DataError(f"{path}: no examples")
    if len(names) == 1:
        return arrays[names[0]][0][1:]
    return (sum(int(np.prod(arrays[n][0][1:], dtype=np.int64)) for n in names),)


def _npz_hint(arrays: dict, features: Sequence[str] | None, label: str) -> str:
    """Name the flags, with this file's arrays where the guess is plain: one array with one
    value per example is the label, the rest are the features."""
    labels = [n for n, (s, _) in arrays.items() if len(s) == 1 or (len(s) == 2 and s[1] == 1)]
    rest = [n for n in arrays if n not in labels]
    if len(labels) == 1 and rest:
        return f"use --features {','.join(rest)} --label {labels[0]} (or save them as x= and y=)"
    return ("save them with np.savez(path, x=features, y=labels), or name yours with "
            "--features NAME[,NAME...] --label NAME")


def _quote(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


# ---------------------------------------------------------------------- tables
def feature_columns(where, columns: list[str], features: Sequence[str] | None, label: str) -> list[str]:
    """The feature columns of a table with ``columns`` (all but the label unless named), or
    a DataError that says what the table has and which flags pick others."""
    names = list(features) if features else [c for c in columns if c != label]
    missing = [c for c in [*names, label] if c not in columns]
    if missing:
        raise DataError(f"{where}: no column named {', '.join(map(repr, missing))}; it has {columns}. "
                        f"Expected the label in column {label!r} and features in "
                        f"{'the other columns' if not features else _quote(names)}; "
                        "pick them with --label COLUMN --features COLUMN,...")
    if not names:
        raise DataError(f"{where}: only the label column {label!r}, no feature columns")
    return names


def _check_table(path: Path, features: Sequence[str] | None, label: str) -> tuple[int, ...]:
    import pyarrow as pa

    try:
        if path.suffix.lower() == ".csv":
            import pyarrow.csv as pacsv

            with pacsv.open_csv(path) as reader:
                schema = reader.schema
        elif path.is_dir():
            import pyarrow.dataset as ds

            schema = ds.dataset(path, format="parquet").schema
        else:
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    names = feature_columns(path, list(schema.names), features, label)
    for name in [*names, label]:
        kind = schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            raise DataError(f"{path}: column {name!r} holds {kind}, not numbers")
    return (len(names),)
