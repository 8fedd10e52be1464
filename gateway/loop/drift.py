"""Input drift per model: live inputs against the summary of what the stable version was
trained or converted on (``input_summary`` in its manifest, :mod:`model_repo.drift`).

On the request path (:meth:`DriftMonitor.observe`, a DataPlane observer) a model's monitor
only counts requests and, every ``stride``-th one, copies a few rows of its input: a dict
lookup, an increment and a comparison for most requests. The stride is set each poll so
that about ``TARGET_ROWS`` rows are sampled per poll interval whatever the traffic, and
the rows waiting to be binned are capped, so memory stays bounded. Every poll, off the event
loop, the sampled rows are binned with the reference's edges into the current time slot of
a ring spanning ``drift_window_seconds``; the window's slots are shared with the other
processes (:mod:`gateway.loop.drift_files`) and everyone's are summed, so every process
shows the same PSI per feature, KS and score (the largest PSI).

The score is watched against ``drift_threshold``: :meth:`DriftMonitor.sustained` says for
how long it has stayed above, which the leader's ``drift`` trigger reads
(:mod:`gateway.loop.jobs.manager`). When the stable version changes, its own summary
becomes the reference and the window starts empty: counts binned against other edges do
not compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from model_repo import RepositoryError
from model_repo.drift import Drift, InputSummary, compare

from ..core.errors import GatewayError
from .drift_files import drift_dir, read_windows, write_window
from .settings import LoopSettings

if TYPE_CHECKING:
    from ..core.registry import Registry

log = logging.getLogger("tunegate.drift")
TARGET_ROWS = 256  # rows sampled per model and poll interval, whatever the traffic
MAX_PENDING = 4 * TARGET_ROWS  # rows waiting to be binned, at most (a burst before the stride adapts)
ROW_BYTES = 4096  # a sample copies up to this many bytes of rows (at least one row)
SLOTS = 10  # time slots in a window
TOP_K = 5  # features shown in metadata and metrics


@dataclass(eq=False)
class ModelDrift:
    """One model's live side, against one reference version."""

    version: int  # the stable version whose summary is the reference
    reference: InputSummary
    input: str | None  # the feed to sample; None: the model's only input
    rows_per_sample: int
    slot_seconds: float
    stride: int = 1
    seen: int = 0  # requests observed since the last poll
    next: int = 1  # the request count at which the next sample is taken
    pending: list[np.ndarray] = field(default_factory=list)
    pending_rows: int = 0
    slots: dict[int, np.ndarray] = field(default_factory=dict)  # this process's, by slot index
    drift: Drift | None = None  # every process's window summed
    processes: int = 1
    above_since: float | None = None  # monotonic time the score last rose above the threshold


class DriftMonitor:
    def __init__(self, registry: Registry, settings_for: Callable[[str], LoopSettings], *, instance: str,
                 poll_seconds: float) -> None:
        self.registry = registry
        self.settings_for = settings_for
        self.instance = instance
        self.poll_seconds = poll_seconds
        self.models: dict[str, ModelDrift] = {}
        self._failed: dict[str, tuple[int, str]] = {}  # model -> (version, why) its reference is unusable
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------------- request path
    def observe(self, model: str, answer: tuple[dict, dict] | None) -> None:
        """An answered infer: every ``stride``-th one leaves a copy of a few input rows."""
        state = self.models.get(model)
        if state is None or answer is None:
            return
        state.seen += 1
        if state.seen < state.next or state.pending_rows >= MAX_PENDING:
            return
        state.next = state.seen + state.stride
        feeds = answer[0]
        array = feeds.get(state.input) if state.input is not None else next(iter(feeds.values()), None)
        width = state.reference.width
        if array is None or array.size % width:
            return
        rows = min(state.rows_per_sample, array.size // width)
        state.pending.append(array.reshape(-1)[:rows * width].copy())
        state.pending_rows += rows

    # ------------------------------------------------------------- every poll
    def begin(self) -> None:
        self._task = self.registry.spawn(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            for record in self.registry.records():
                try:
                    await self._update(record.name)
                except Exception:  # one model's failure must not stop the others' monitoring
                    log.exception("model %s: drift not updated", record.name)

    async def _update(self, model: str) -> None:
        settings = self.settings_for(model)
        state = await self._state(model, settings)
        if state is None:
            return
        pending, rows, state.pending, state.pending_rows = state.pending, state.pending_rows, [], 0
        if pending:  # about TARGET_ROWS rows per interval at this interval's traffic and rows per sample
            state.stride = max(1, state.seen * rows // (len(pending) * TARGET_ROWS))
        state.seen, state.next = 0, state.stride
        now_slot = int(time.time() // state.slot_seconds)
        first = now_slot - SLOTS + 1
        if pending:
            counts = await asyncio.to_thread(_bin_all, state.reference, pending)
            slot = state.slots.get(now_slot)
            state.slots[now_slot] = counts if slot is None else slot + counts
        expired = [i for i in state.slots if i < first]
        for i in expired:
            del state.slots[i]
        directory = drift_dir(self.registry.repo.root, model)
        mine = dict(state.slots)
        try:
            if pending or expired:
                await asyncio.to_thread(write_window, directory, self.instance, state.version,
                                        state.slot_seconds, mine)
            others, counted = await asyncio.to_thread(
                read_windows, directory, exclude=self.instance, reference=state.version,
                slot_seconds=state.slot_seconds, first_slot=first, shape=state.reference.counts.shape,
                window_seconds=settings.drift_window_seconds)
        except OSError as exc:  # a full or flaky volume: keep serving, share next poll
            log.warning("model %s: drift counts not shared: %s", model, exc)
            others, counted = state.reference.empty(), 0
        for counts in mine.values():
            others += counts
        state.drift, state.processes = compare(state.reference, others), counted + 1
        score = state.drift.score
        if score is None or score <= settings.drift_threshold:
            state.above_since = None
        elif state.above_since is None:
            state.above_since = time.monotonic()

    async def _state(self, model: str, settings: LoopSettings) -> ModelDrift | None:
        """The model's live side against its stable version's summary (a new one when the
        stable version changed), or None: drift off, nothing serving, or no usable summary."""
        state = self.models.get(model)
        try:
            served = self.registry.route(model, split=False) if settings.drift else None
        except GatewayError:
            served = None
        if served is None:
            self.models.pop(model, None)
            return None
        slot_seconds = settings.drift_window_seconds / SLOTS
        if state is not None and state.version == served.version and state.slot_seconds == slot_seconds:
            return state
        self.models.pop(model, None)
        if self._failed.get(model, (None,))[0] == served.version:
            return None
        try:
            reference = await asyncio.to_thread(_reference, self.registry.repo, model, served.version)
            if reference is None:
                return None
            names = [t.name for t in served.signature.inputs]
            name = reference.input if reference.input in names else None
            if name is None and len(names) != 1:
                raise RepositoryError(f"input_summary names input {reference.input!r}; the model takes {names}")
            watched = next(t for t in served.signature.inputs if t.name == (name or names[0]))
            if watched.datatype == "BYTES":  # bins of numbers say nothing about text
                raise RepositoryError(f"input {watched.name!r} is text (BYTES): drift is measured on numeric "
                                      "inputs only (docs/preprocessing-layers.md)")
        except RepositoryError as exc:
            self._failed[model] = (served.version, exc.message)
            log.warning("model %s version %s: no drift monitoring: %s", model, served.version, exc.message)
            return None
        rows_per_sample = max(1, ROW_BYTES // (4 * reference.width))
        state = self.models[model] = ModelDrift(served.version, reference, name, rows_per_sample, slot_seconds)
        return state

    # ------------------------------------------------------------- readers
    def score(self, model: str) -> float | None:
        state = self.models.get(model)
        return None if state is None or state.drift is None else state.drift.score

    def sustained(self, model: str) -> float | None:
        """Seconds the score has stayed above the model's threshold; None when it is not above."""
        state = self.models.get(model)
        if state is None or state.above_since is None:
            return None
        return time.monotonic() - state.above_since

    def parameters(self, model: str) -> dict[str, Any]:
        """``parameters.drift`` of the model's metadata."""
        state = self.models.get(model)
        if state is None:
            failed = self._failed.get(model)
            return {"drift": {"reference_version": failed[0], "error": failed[1]}} if failed else {}
        drift, settings = state.drift, self.settings_for(model)
        score = None if drift is None else drift.score
        out: dict[str, Any] = {
            "reference_version": state.version, "reference_rows": state.reference.rows,
            "features": state.reference.features, "projected": state.reference.projection is not None,
            "window_seconds": settings.drift_window_seconds, "threshold": settings.drift_threshold,
            "rows": 0 if drift is None else drift.rows, "processes": state.processes,
            "score": None if score is None or not math.isfinite(score) else round(score, 6),
            "above_threshold_seconds": None if state.above_since is None else round(self.sustained(model), 3),
        }
        if drift is not None and drift.rows:
            out["top"] = drift.top(TOP_K)
        return {"drift": out}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _bin_all(reference: InputSummary, pending: list[np.ndarray]) -> np.ndarray:
    return reference.bin(np.concatenate(pending))


def _reference(repo, model: str, version: int) -> InputSummary | None:
    """The version's ``input_summary`` (blocking); None when it has none."""
    data = repo.read_manifest(model, version).extra.get("input_summary")
    return None if data is None else InputSummary.from_dict(data)
