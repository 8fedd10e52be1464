"""Warm-up before a version takes traffic: the config's ``model_warmup`` samples (Triton's
zero, random or file data, at a batch size, ``count`` runs), else zeros once per preferred
batch size (``RuntimeSettings.warmup``).

A sample is checked against the model's signature like a request, so a wrong sample fails
the load with its reason (the version is UNAVAILABLE, never half-warm and serving).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from model_repo import ModelConfig, datatypes
from model_repo.config import WarmupInput, WarmupSample, warmup_samples
from model_repo.errors import ConfigError

from ..core.errors import GatewayError
from ..core.signature import Signature
from ..core.tensors import from_raw


class WarmupError(Exception):
    """A sample that cannot be built or run; the runtime turns it into a LoadError."""


@dataclass(frozen=True)
class Run:
    name: str
    feeds: dict[str, np.ndarray]
    runs: int


def plan(config: ModelConfig, signature: Signature, model_dir: Path, default: bool) -> list[Run]:
    """What to run before the version is ready: the config's samples when it has any (as in
    Triton, whatever ``default`` says), else the default zeros when ``default``."""
    try:
        samples = warmup_samples(config, model_dir)
    except ConfigError as exc:
        raise WarmupError(exc.message) from None
    if samples:
        return [Run(s.name, _feeds(s, signature), s.runs) for s in samples]
    if not default:
        return []
    return [Run(f"zeros at batch size {rows}", zeros(signature, rows), 1) for rows in _default_sizes(config, signature)]


def run_all(runs: list[Run], run: Callable[[dict[str, np.ndarray]], object]) -> int:
    """Run every sample its number of times; the number of runs made."""
    done = 0
    for sample in runs:
        for _ in range(sample.runs):
            try:
                run(sample.feeds)
            except GatewayError as exc:
                raise WarmupError(f"warm-up {sample.name!r} failed: {exc.message}") from None
            done += 1
    return done


def zeros(signature: Signature, rows: int) -> dict[str, np.ndarray]:
    feeds = {}
    for meta in signature.inputs:
        shape = ([rows] if signature.batching else []) + [1 if d == -1 else d for d in meta.dims]
        feeds[meta.name] = _filled(meta.datatype, shape, "zero")
    return feeds


def _default_sizes(config: ModelConfig, signature: Signature) -> list[int]:
    if not signature.batching:
        return [1]
    preferred = [s for s in config.dynamic_batching.preferred_batch_size if s <= signature.max_batch_size]
    return sorted(set(preferred)) or [1]


def _feeds(sample: WarmupSample, signature: Signature) -> dict[str, np.ndarray]:
    given = {i.name for i in sample.inputs}
    missing = sorted({m.name for m in signature.inputs} - given)
    if missing:
        raise WarmupError(f"model_warmup {sample.name!r}: no data for input(s) {missing}")
    feeds = {}
    for spec in sample.inputs:
        shape = ([sample.batch_size] if signature.batching else []) + list(spec.dims)
        try:
            signature.check_input(spec.name, spec.datatype, shape)
        except GatewayError as exc:
            raise WarmupError(f"model_warmup {sample.name!r}: {exc.message}") from None
        feeds[spec.name] = _data(spec, sample, shape, signature.batching)
    return feeds


def _data(spec: WarmupInput, sample: WarmupSample, shape: list[int], batched: bool) -> np.ndarray:
    if spec.source != "file":
        return _filled(spec.datatype, shape, spec.source)
    assert spec.file is not None
    try:
        raw = spec.file.read_bytes()
    except OSError as exc:
        raise WarmupError(f"model_warmup {sample.name!r}: input {spec.name!r}: cannot read {spec.file}: "
                          f"{exc.strerror}") from None
    count = int(np.prod(spec.dims, dtype=np.int64))
    try:
        one = from_raw(spec.name, datatypes.from_v2(spec.datatype), memoryview(raw), count)
    except GatewayError as exc:
        raise WarmupError(f"model_warmup {sample.name!r}: {spec.file.name}: {exc.message}") from None
    one = one.reshape(spec.dims)
    # Triton's rule: one sample's data, repeated to the batch size.
    return np.repeat(one[np.newaxis], sample.batch_size, axis=0) if batched else one


def _filled(datatype: str, shape: list[int], source: str) -> np.ndarray:
    dtype = datatypes.from_v2(datatype).numpy
    if datatype == "BYTES":  # onnxruntime takes text: empty strings, random or not
        return np.full(shape, "", dtype=object)
    if source == "zero":
        return np.zeros(shape, dtype)
    rng = np.random.default_rng()
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(size=shape).astype(dtype)
