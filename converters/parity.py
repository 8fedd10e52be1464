"""Does the ONNX model answer like the original? Same inputs through TensorFlow and
onnxruntime, at batch 1 and a larger batch; max absolute and relative error per output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import parity_text
from .errors import ParityError, SourceError
from .sources.base import InputSpec

BATCHES = (1, 8)
VARIABLE_DIM = 16  # length used for a variable non-batch dimension (e.g. sequence length)
DEFAULT_INT_HIGH = 10
SEED = 0


def generate_inputs(specs: list[InputSpec], batch: int, seed: int = SEED) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + batch)
    feeds = {}
    for spec in specs:
        shape = (batch,) + tuple(VARIABLE_DIM if d is None else d for d in spec.shape[1:])
        if spec.dtype.kind == "O":
            feeds[spec.name] = parity_text.generate_strings(spec.vocabulary, shape, rng)
        elif spec.dtype.kind in "iu" and spec.vocabulary and spec.high is None:
            feeds[spec.name] = parity_text.generate_integers(spec.vocabulary, shape, spec.dtype, rng)
        elif spec.dtype.kind in "iu":
            feeds[spec.name] = rng.integers(0, spec.high or DEFAULT_INT_HIGH, size=shape).astype(spec.dtype)
        elif spec.dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        elif spec.dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        else:
            raise SourceError(f"input {spec.name!r} has dtype {spec.dtype}; cannot generate parity inputs "
                              "for it, pass --sample file.npz")
    return feeds


def edge_batches(specs: list[InputSpec]) -> list[dict[str, np.ndarray]]:
    """For a model that takes text: one more batch in which no text holds a token (empty,
    blank, punctuation only). Ragged tensors are then empty, a case converted graphs have
    failed on (division by a longest row of 0) while every batch with a word passed."""
    if not any(spec.dtype.kind == "O" for spec in specs):
        return []
    feeds = generate_inputs(specs, len(parity_text.NO_TOKENS))
    for spec in specs:
        if spec.dtype.kind == "O":
            blank = np.empty(feeds[spec.name].shape, dtype=object)
            for row, text in enumerate(parity_text.NO_TOKENS):
                blank[row, ...] = text
            feeds[spec.name] = blank
    return [feeds]


def load_sample(path: str | Path, specs: list[InputSpec]) -> list[dict[str, np.ndarray]]:
    """A user's ``.npz`` with one array per input name (batch first), or for a model with one
    text input a ``.txt`` with one text per line; checked at batch 1 and in full."""
    if str(path).endswith(".txt"):
        return sample_batches(parity_text.read_lines(path, specs), specs, str(path))
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise SourceError(f"--sample {path}: not a readable .npz file: {exc}") from None
    return sample_batches(arrays, specs, str(path))


def sample_batches(arrays: dict[str, np.ndarray], specs: list[InputSpec], where: str = "sample"):
    names = [s.name for s in specs]
    if len(specs) == 1 and names[0] not in arrays and len(arrays) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise SourceError(f"{where}: no array for inputs {missing}; it has {sorted(arrays)}, "
                          f"expected one array per model input {names}")
    feeds = {}
    for spec in specs:
        array = np.asarray(arrays[spec.name])
        if array.ndim != len(spec.shape) or any(d is not None and d != a for d, a in zip(spec.shape[1:], array.shape[1:])):
            raise SourceError(f"{where}: {spec.name!r} has shape {array.shape}, expected {spec.shape}")
        if spec.dtype.kind == "O":
            feeds[spec.name] = parity_text.as_text(array, f"{where}: {spec.name!r}")
        else:
            feeds[spec.name] = array.astype(spec.dtype, copy=False)
    sizes = {a.shape[0] for a in feeds.values()}
    if len(sizes) != 1:
        raise SourceError(f"{where}: inputs have different batch sizes {sorted(sizes)}")
    first = {k: v[:1] for k, v in feeds.items()}
    return [first, feeds] if sizes.pop() > 1 else [first]


def compare(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray], atol: float, rtol: float) -> dict:
    """Per output: max |Δ|, max |Δ|/|ref| (over elements with |ref| > atol, where a relative
    error means something), whether every element is within atol + rtol·|ref| (exactly equal
    for integer, boolean and text outputs: token ids and lookups have no tolerance), and
    whether the reference answers vary across the batch at all (agreement on constant answers
    proves little, e.g. a random deep network whose activations vanished)."""
    report = {}
    for name, ref in reference.items():
        exact = np.asarray(ref).dtype.kind in "biuOSU"
        if np.asarray(ref).dtype.kind in "OSU":
            report[name] = _compare_text(np.asarray(ref), np.asarray(actual[name]))
            continue
        ref = np.asarray(ref, dtype=np.float64)
        got = np.asarray(actual[name], dtype=np.float64)
        if ref.shape != got.shape:
            report[name] = {"max_abs": float("inf"), "max_rel": float("inf"), "passed": False, "varies": False,
                            "why": f"shape {got.shape}, expected {ref.shape}"}
            continue
        diff = np.abs(ref - got)
        meaningful = np.abs(ref) > atol
        rel = diff[meaningful] / np.abs(ref[meaningful]) if meaningful.any() else np.zeros(1)
        finite = bool(np.isfinite(got).all() == np.isfinite(ref).all())
        report[name] = {
            "max_abs": float(diff.max(initial=0.0)),
            "max_rel": float(rel.max(initial=0.0)),
            "passed": finite and bool(np.all(diff == 0 if exact else diff <= atol + rtol * np.abs(ref))),
            "varies": bool(ref.shape[0] > 1 and np.ptp(ref, axis=0).max(initial=0.0) > 0),
        }
    return report


def _compare_text(ref: np.ndarray, got: np.ndarray) -> dict:
    if ref.shape != got.shape:
        return {"max_abs": float("inf"), "max_rel": float("inf"), "passed": False, "varies": False,
                "why": f"shape {got.shape}, expected {ref.shape}"}
    equal = parity_text.strings_equal(ref, got)
    differing = int(equal.size - equal.sum())
    return {"max_abs": 0.0 if not differing else float("inf"), "max_rel": 0.0 if not differing else float("inf"),
            "passed": not differing, "varies": bool(len(set(map(repr, ref.reshape(-1)))) > 1),
            "differing": differing}


def top1_agreement(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray], margin: float) -> dict:
    """For class-score outputs (last dim > 1): share of rows whose argmax agrees, counting only
    rows where the reference's top two differ by more than ``margin`` (near-ties are noise)."""
    result = {}
    for name, ref in reference.items():
        ref = np.asarray(ref)
        if ref.ndim < 2 or ref.shape[-1] < 2 or ref.dtype.kind != "f":
            continue
        ref2 = ref.reshape(-1, ref.shape[-1])
        got2 = np.asarray(actual[name]).reshape(-1, ref.shape[-1])
        top2 = np.sort(ref2, axis=1)[:, -2:]
        decided = (top2[:, 1] - top2[:, 0]) > margin
        if decided.any():
            agree = ref2[decided].argmax(1) == got2[decided].argmax(1)
            result[name] = float(agree.mean())
    return result


def check_parity(run_reference: Callable, session, batches: list[dict[str, np.ndarray]], *,
                 atol: float, rtol: float, label: str = "model.onnx", require_top1: bool = False,
                 reference_outputs: list[dict] | None = None) -> dict:
    """Runs every batch through both and merges the worst errors; raises ParityError if any
    output is out of tolerance. ``reference_outputs`` reuses TensorFlow answers already computed."""
    outputs = [o.name for o in session.get_outputs()]
    per_output: dict[str, dict] = {}
    top1: dict[str, float] = {}
    for i, feeds in enumerate(batches):
        ref = reference_outputs[i] if reference_outputs else run_reference(feeds)
        got = dict(zip(outputs, session.run(outputs, feeds)))
        missing = set(ref) - set(got)
        if missing:
            raise ParityError(f"{label}: outputs {sorted(missing)} missing from the ONNX model (it has {outputs})")
        for name, entry in compare(ref, got, atol, rtol).items():
            merged = per_output.setdefault(name, {"max_abs": 0.0, "max_rel": 0.0, "passed": True,
                                                  "varies": False})
            merged["varies"] = merged["varies"] or entry["varies"]
            merged["max_abs"] = max(merged["max_abs"], entry["max_abs"])
            merged["max_rel"] = max(merged["max_rel"], entry["max_rel"])
            merged["passed"] = merged["passed"] and entry["passed"]
            if "why" in entry:
                merged["why"] = entry["why"]
        if require_top1:
            for name, share in top1_agreement(ref, got, margin=atol).items():
                top1[name] = min(top1.get(name, 1.0), share)
    report = {
        "atol": atol, "rtol": rtol,
        "batches": [int(next(iter(b.values())).shape[0]) for b in batches],
        "outputs": per_output,
        "max_abs": max((e["max_abs"] for e in per_output.values()), default=0.0),
        "max_rel": max((e["max_rel"] for e in per_output.values()), default=0.0),
    }
    failed = [n for n, e in per_output.items() if not e["passed"]]
    if require_top1:
        report["top1_agreement"] = top1
        failed += [f"{n} (top-1 agreement {s:.0%})" for n, s in top1.items() if s < 1.0]
    report["passed"] = not failed
    if failed:
        worst = ", ".join(f"{n}: max |Δ| {per_output[n]['max_abs']:.3g}, max rel {per_output[n]['max_rel']:.3g}"
                          for n in failed if n in per_output)
        raise ParityError(f"{label} does not match the original model within atol={atol:g}, rtol={rtol:g}: "
                          f"{', '.join(failed)}" + (f" ({worst})" if worst else ""), report=report)
    return report
