"""Training data: .npz, .csv and Parquet files, and the gateway's feedback store.

Every source becomes features ``x`` and labels ``y``. Columns are chosen by
name: ``features`` (default: every column but the label; for .npz the array ``x``) and
``label`` (default ``label``; for .npz ``y`` when there is no ``label``). For a model with
several inputs (``inputs``: its input names) the features are a dict, one array per input,
read by name from feedback stores only: files (.npz, CSV, Parquet) feed one input. A directory named
``*.parquet`` (what Spark writes: part files) is one Parquet table; any other directory, or
``feedback:`` (the model's default store), is read as a feedback store.

The digest is over the arrays' content, not the files, so the same data in two formats
records the same lineage. Rows read from a feedback store keep their sequence numbers
(``Dataset.seq``; -1 for rows from files), so a job can record exactly which rows it
trained on and which it held out (``trainer.snapshot``). Given a :class:`trainer.mix.FeedbackMix`
the model's own store is read as that bounded mix (recent rows, a replay sample, the golden
set) rather than whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_repo.feedback import feedback_dir, read_feedback
from model_repo.feedback_format import decode_text

from .errors import DataError
from .features import Features, InputNames, concat, digest_into, rows, several_inputs_message, take

FEEDBACK_SCHEME = "feedback:"
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
PARQUET_SUFFIXES = (".parquet", ".pq")


def is_parquet_dir(path: Path) -> bool:
    """A directory of Parquet part files (Spark's output), read as one table."""
    return path.suffix.lower() in PARQUET_SUFFIXES and path.is_dir()


@dataclass
class Part:
    """One source as read: a file's digest, or a feedback store's sequence range."""

    spec: str
    rows: int
    digest: str
    store: Path | None = None  # a feedback store
    through: int | None = None  # the highest sequence number the read was bounded by
    own: bool = False  # the model's own store (its numbers are the loop's)
    mix: dict | None = None  # the own store read as a bounded mix: what it held (trainer.mix)


@dataclass
class Dataset:
    x: Features  # one array, or {input name: array} for a model with several inputs
    y: np.ndarray
    sources: list[str]
    seq: np.ndarray | None = None  # per row: its number in the model's own feedback store, else -1
    parts: list[Part] | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, index: np.ndarray) -> Dataset:
        """The rows at ``index`` (sources and parts kept: they say where the whole came from)."""
        return Dataset(take(self.x, index), self.y[index], self.sources,
                       None if self.seq is None else self.seq[index], self.parts)

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        digest_into(h, self.x)
        digest_into(h, self.y)
        return "sha256:" + h.hexdigest()


def is_text(array: np.ndarray) -> bool:
    return array.dtype.kind in "OSU"


def feedback_stores(paths: Sequence[str], *, repo_root: Path | None = None, model: str | None = None) -> list[Path]:
    """The feedback stores among ``paths`` (``feedback:``, ``feedback:DIR`` or a directory)."""
    return [store for spec in paths if (store := _feedback_store(spec, repo_root, model)) is not None]


def _feedback_store(spec: str, repo_root: Path | None, model: str | None) -> Path | None:
    if spec.startswith(FEEDBACK_SCHEME):
        where = spec[len(FEEDBACK_SCHEME):]
        if where:
            return Path(where)
        if repo_root is None or model is None:
            raise DataError("'feedback:' needs --repo and --model")
        return feedback_dir(repo_root, model)
    path = Path(spec)
    return path if path.is_dir() and not is_parquet_dir(path) else None


def load_data(paths: Sequence[str], *, features: Sequence[str] | None = None, label: str | None = None,
              repo_root: Path | None = None, model: str | None = None,
              through: Mapping[str, int] | None = None, mix=None, inputs: Sequence[str] | None = None) -> Dataset:
    """Read and concatenate every source; raises :class:`DataError` with the file's name.

    ``through`` (store path -> a sequence number, :func:`model_repo.feedback.last_sequence`)
    pins what is read of a feedback store the gateway may still be appending to, so every
    rank reads the same rows. ``mix`` (a :class:`trainer.mix.FeedbackMix`) bounds what is
    read of the model's own store, and adds its golden set. ``inputs`` (the model's input
    names) with more than one name reads every one of them from each feedback store."""
    if not paths:
        raise DataError("no data given (--data PATH...)")
    names = _feature_names(features, inputs)
    xs, ys, seqs, parts = [], [], [], []
    for spec in paths:
        store = _feedback_store(spec, repo_root, model)
        bound = None if store is None else (through or {}).get(str(store))
        own = store is not None and _is_own_store(store, repo_root, model)
        recorded = None
        if own and mix is not None:
            x, y, seq, recorded = _load_mix(store, names, bound, mix)
        elif store is not None:
            x, y, seq = _load_feedback(store, names, bound)
            if not own:
                seq = np.full(rows(x), -1, np.int64)  # numbers of another store say nothing of this model's
        else:
            x, y = _load_file(Path(spec), names, label)
            seq = np.full(rows(x), -1, np.int64)
        if rows(x) != y.shape[0]:
            raise DataError(f"{spec}: {rows(x)} feature rows but {y.shape[0]} labels")
        if rows(x) == 0:
            raise DataError(f"{spec}: no examples")
        xs.append(x)
        ys.append(y)
        seqs.append(seq)
        parts.append(Part(spec, rows(x), Dataset(x, y, []).digest, store, bound, own, recorded))
    if mix is not None and mix.golden is not None and any(p.mix is not None for p in parts):
        _add_golden(mix, names, xs, ys, seqs, parts)
    try:
        x, y = concat(xs), np.concatenate(ys)
    except ValueError as exc:
        raise DataError(f"data files do not agree on shapes: {exc}") from None
    return Dataset(_features(x), _labels(y), [str(p) for p in paths], np.concatenate(seqs), parts)


def _feature_names(features: Sequence[str] | None, inputs: Sequence[str] | None):
    """What the readers select: ``features`` for a one-input model (one array), or the model's
    input names, marked as :class:`InputNames`, for a model with several (a dict of arrays)."""
    if not inputs or len(inputs) < 2:
        return features
    if features and sorted(features) != sorted(inputs):
        raise DataError(f"--features {','.join(features)}: the model takes several inputs ({', '.join(inputs)}), "
                        "each read by its name from the feedback store; leave --features out")
    return InputNames(inputs)


def _is_own_store(store: Path, repo_root: Path | None, model: str | None) -> bool:
    return repo_root is not None and model is not None and \
        store.resolve() == feedback_dir(repo_root, model).resolve()


def _load_file(path: Path, features: Sequence[str] | None, label: str | None) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file() and not is_parquet_dir(path):
        raise DataError(f"data file not found: {path}")
    if isinstance(features, InputNames):
        raise DataError(several_inputs_message(path, features))
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            return _load_npz(path, features, label)
        if suffix in TABLE_SUFFIXES:
            return _load_table(path, features, label or "label")
    except DataError:
        raise
    except Exception as exc:  # every reader has its own exception types; the file name matters most
        raise DataError(f"cannot read {path}: {exc}") from None
    raise DataError(f"{path}: unsupported data format {suffix!r} (use .npz, .csv, .parquet or a feedback store)")


def npz_names(arrays: Collection[str], features: Sequence[str] | None, label: str | None) -> tuple[list[str], str]:
    """The feature arrays and the label array an .npz holding ``arrays`` is read by."""
    return list(features or ["x"]), label or ("label" if "label" in arrays else "y")


def _load_npz(path: Path, features: Sequence[str] | None, label: str | None) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        keys = set(npz.files)
        names, label = npz_names(keys, features, label)
        missing = [k for k in [*names, label] if k not in keys]
        if missing:
            raise DataError(f"{path}: no array named {missing} (it has {sorted(keys)})")
        parts = [npz[k] for k in names]
        x = parts[0] if len(parts) == 1 else np.column_stack(parts)
        return x, npz[label]


def _load_table(path: Path, features: Sequence[str] | None, label: str) -> tuple[np.ndarray, np.ndarray]:
    if path.suffix.lower() == ".csv":
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(path)
    else:
        import pyarrow.parquet as pq

        # A directory's part files are read in name order (part-00000, ...): Spark's row order.
        table = pq.read_table(path)
    columns = table.column_names
    names = list(features) if features else [c for c in columns if c != label]
    missing = [c for c in [*names, label] if c not in columns]
    if missing:
        raise DataError(f"{path}: no column named {missing} (it has {columns})")
    x = np.column_stack([table.column(c).to_numpy() for c in names])
    return x, table.column(label).to_numpy()


def _load_feedback(directory: Path, features: Sequence[str] | None, through: int | None = None, *,
                   after: int | None = None, sequences=None) -> tuple[Features, np.ndarray, np.ndarray]:
    data = read_feedback(directory, after=after, through=through, sequences=sequences)
    if data.quarantined:
        # Into the job's log (stdout): the job goes on with the rest, but someone should look.
        reasons = "; ".join(data.quarantine_reasons[:5])
        print(f"trainer: feedback store {directory}: {data.quarantined} records quarantined (skipped), "
              f"{data.records} used: {reasons}", flush=True)
    if not data.records:
        raise DataError(f"feedback store {directory} holds no records"
                        + (f" but {data.quarantined} quarantined ones" if data.quarantined else ""))
    if isinstance(features, InputNames):
        missing = [n for n in features if n not in data.inputs]
        if missing:
            raise DataError(f"{directory}: no input named {missing} (it has {sorted(data.inputs)}); "
                            f"the model takes {list(features)}")
        return {n: data.inputs[n] for n in features}, data.labels, data.sequences
    name = features[0] if features else None
    if name is None:
        if len(data.inputs) != 1:
            raise DataError(f"{directory}: several inputs {sorted(data.inputs)}; pick one with --features")
        (name,) = data.inputs
    if name not in data.inputs:
        raise DataError(f"{directory}: no input named {name!r} (it has {sorted(data.inputs)})")
    return data.inputs[name], data.labels, data.sequences


def _load_mix(store: Path, features: Sequence[str] | None, through: int | None,
              mix) -> tuple[Features, np.ndarray, np.ndarray, dict]:
    """The recent rows and the replay sample of the model's own store (``trainer.mix``)."""
    try:
        replay = _load_feedback(store, features, None, sequences=mix.replay) if mix.replay else None
    except DataError:
        replay = (np.zeros((0,)),) * 3  # none of them left
    if replay is not None and replay[2].shape[0] != len(mix.replay):
        # A compaction thinned the sample since rank 0 chose it: ranks could disagree on rows.
        raise DataError(f"feedback store {store}: {len(mix.replay) - replay[2].shape[0]} of the replay rows "
                        "chosen for this job were compacted away meanwhile; start the job again")
    try:
        recent = _load_feedback(store, features, through, after=mix.after)
    except DataError:
        if replay is None:
            raise
        recent = None  # no new rows: a job started by hand rehearses
    parts = [p for p in (replay, recent) if p is not None]
    x = concat([p[0] for p in parts])
    y, seq = (np.concatenate([p[i] for p in parts]) for i in (1, 2))
    recent_rows = 0 if recent is None else int(recent[2].shape[0])
    return x, y, seq, mix.record(recent_rows, through, None)


def _add_golden(mix, features, xs: list, ys: list, seqs: list, parts: list) -> None:
    from .mix import load_golden

    x, y = load_golden(Path(mix.golden), mix.golden_rows, features, seed=0)
    xs.append(x)
    ys.append(y)
    seqs.append(np.full(rows(x), -1, np.int64))
    digest = Dataset(x, y, []).digest
    parts.append(Part(f"golden:{mix.golden}", rows(x), digest))
    own = next(p for p in parts if p.mix is not None)
    own.mix["golden"]["digest"] = digest


def _features(x: Features) -> Features:
    """Numbers as float32; text (a model's string input) as an object array of ``str``, which
    the model's own preprocessing layers turn into numbers inside each step. Of several inputs
    only the float ones become float32: an integer column feeds an ``IntegerLookup``, which
    looks up the integers the gateway stored (the model's signature), not floats."""
    if isinstance(x, dict):
        return {k: _text(v) if is_text(v) else _numbers(v).astype(np.float32, copy=False)
                if v.dtype.kind == "f" else _numbers(v) for k, v in x.items()}
    if is_text(x):
        return _text(x)
    return _numbers(x).astype(np.float32, copy=False)


def _numbers(x: np.ndarray) -> np.ndarray:
    if not np.issubdtype(x.dtype, np.number) and x.dtype != np.bool_:
        raise DataError(f"features must be numeric or text, got {x.dtype}")
    return x


def _text(x: np.ndarray) -> np.ndarray:
    # The feedback store gives str already; an anchor set's .npz gives numpy unicode or bytes.
    try:
        return decode_text(x)
    except ValueError as exc:
        raise DataError(f"text features: {exc}") from None


def _labels(y: np.ndarray) -> np.ndarray:
    if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        return y.astype(np.int64, copy=False)
    if np.issubdtype(y.dtype, np.floating):
        return y.astype(np.float32, copy=False)
    raise DataError(f"labels must be numeric, got {y.dtype}")


# ------------------------------------------------------------ splitting
def split_validation(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """A held-out part, the same on every rank (the seed is shared, not per rank)."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"--val-split must be between 0 and 1, got {fraction}")
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = max(1, int(round(len(data) * fraction)))
    if n_val >= len(data):
        raise DataError(f"{len(data)} examples are too few to hold out {fraction:.0%}")
    val, train = order[:n_val], order[n_val:]
    return data.take(train), data.take(val)


def shard(data: Dataset, rank: int, size: int, seed: int) -> Dataset:
    """Rank ``rank``'s share: a shared shuffle, then every ``size``-th example."""
    order = np.random.default_rng(seed).permutation(len(data))[rank::size]
    return data.take(order)


def steps_per_epoch(n_train: int, size: int, batch_size: int) -> int:
    """The same number on every rank (a rank with one step more would hang the allreduce)."""
    smallest_shard = n_train // size
    if smallest_shard == 0:
        raise DataError(f"{n_train} training examples cannot be split over {size} ranks")
    return max(1, smallest_shard // batch_size)


def epoch_batches(data: Dataset, *, batch_size: int, steps: int, seed: int, rank: int, epoch: int):
    """Yield ``steps`` batches of this rank's shard, shuffled with a per-rank, per-epoch seed."""
    order = np.random.default_rng([seed, rank, epoch]).permutation(len(data))
    batch = min(batch_size, len(data))
    for i in range(steps):
        idx = order[i * batch:(i + 1) * batch]
        yield take(data.x, idx), data.y[idx]
