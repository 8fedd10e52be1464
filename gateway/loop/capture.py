"""Request capture: the inputs of recent infer requests, so feedback can send only a label,
through any gateway process or replica over the same repository.

Per model and per gateway instance (one process incarnation), bounded by count and bytes,
kept in memory and appended to the instance's own log on disk (``gateway.loop.capture_log``
has the layout). Segments rotate at half the budget (bytes or requests) and only the two
newest are kept; the captures of a rotated-out segment leave memory too, so what one
instance can label is what is on disk, and the disk holds at most about
``capture_max_bytes`` per live instance. Each instance removes the directories of the others
that were last written more than ``stale_after`` seconds ago (an hour by default: a dead
instance's captures stay labellable that long after it stopped, and the disk per model is the
live instances' budgets plus those of the instances that stopped in the last hour).

A label that names a request this instance did not capture (another process or replica, or
this process before a restart) is looked up in the others' segments through an incremental
index (``gateway.loop.capture_index``). A request is labelled once across every process and
restart: the label is claimed with an exclusive-create file beside the capture's segment
(:meth:`CaptureStore.claim`), released when storing the feedback fails so a retry works.

Writes are flushed to the OS but not fsynced: a gateway crash loses nothing, a power cut
may lose the last captures; fsyncing every inference would put a disk flush per request on
the capture thread. All of a store's work (disk and memory) runs on one worker thread, in
order, so the event loop never waits for it and the store needs no lock.

A model that does not batch is captured as one example (a leading axis of 1).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from model_repo import datatypes

from ..core.errors import BadRequest, Conflict
from ..core.signature import Signature
from . import capture_log
from .capture_index import CaptureIndex
from .capture_log import Captured, check_instance

__all__ = ["CAPTURE_DIR", "STALE_AFTER_SECONDS", "Captured", "CaptureStore", "Found", "captured_feeds",
           "check_instance", "predicted_classes"]

log = logging.getLogger("tunegate.capture")

CAPTURE_DIR = ".capture"
STALE_AFTER_SECONDS = 3600.0


def captured_feeds(signature: Signature, item: Captured) -> dict[str, np.ndarray]:
    """``item``'s inputs as feedback stores them (one row per example, also for a model that
    does not batch), checked against the model's signature as it is now."""
    feeds = {}
    for meta in signature.inputs:
        array = item.inputs.get(meta.name)
        if array is None:
            raise BadRequest(f"the captured request has no input {meta.name!r} (the model changed since): "
                             "send the inputs with the labels")
        if not signature.batching and array.ndim == len(meta.dims):
            array = array[np.newaxis]  # captured by a gateway that stored no example axis
        if array.ndim != len(meta.dims) + 1 or any(d != -1 and d != s for d, s in zip(meta.dims, array.shape[1:])):
            raise BadRequest(f"the captured input {meta.name!r} of shape {list(array.shape)} does not fit the "
                             f"model's {meta.shape(True)} (the model changed since): send the inputs with the labels")
        dtype = datatypes.from_v2(meta.datatype).numpy
        feeds[meta.name] = array if dtype.hasobject else array.astype(dtype, copy=False)
    if len({a.shape[0] for a in feeds.values()}) > 1:
        raise BadRequest("the captured inputs disagree on rows")
    return feeds


def predicted_classes(outputs: dict[str, np.ndarray], output_names: list[str]) -> np.ndarray | None:
    """argmax of the first output when it is a [batch, classes] score matrix."""
    if not output_names:
        return None
    first = outputs.get(output_names[0])
    if first is None or first.ndim != 2 or first.shape[1] < 2 or not np.issubdtype(first.dtype, np.floating):
        return None
    return np.argmax(first, axis=1)




@dataclass
class Found:
    """The capture a label names: its inputs (None once this instance stored its label) and
    the segment that holds its record (where its label is claimed)."""

    item: Captured | None
    segment: Path


class CaptureStore:
    """One model's captures by this instance, and the way to the other instances'. Every
    method runs on the capture thread (see module doc)."""

    def __init__(self, directory: Path, *, instance: str, max_requests: int, max_bytes: int,
                 stale_after: float = STALE_AFTER_SECONDS) -> None:
        self.directory = directory  # the model's capture root; this instance writes under own
        self.own = directory / check_instance(instance)
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.stale_after = stale_after
        self._items: OrderedDict[str, Found] = OrderedDict()
        self._bytes = 0
        self._index = CaptureIndex(directory, instance)
        self._file = None
        self._segment: Path | None = None
        self._number = 0
        self._file_bytes = 0
        self._file_records = 0
        self._checked = time.monotonic()

    def put(self, request_ids: list[str], item: Captured) -> None:
        if self._file is not None and time.monotonic() - self._checked > self.stale_after / 4:
            self._check()
        segment_bytes, segment_records = max(self.max_bytes // 2, 1), max(self.max_requests // 2, 1)
        for request_id in request_ids:
            record = capture_log.encode(request_id, item)
            if (self._file is None or self._file_bytes + len(record) > segment_bytes
                    or self._file_records >= segment_records):
                self._rotate()
            self._file.write(record)
            self._file_bytes += len(record)
            self._file_records += 1
            self._remember(request_id, Found(item, self._segment))
        self._file.flush()

    def _remember(self, request_id: str, found: Found) -> None:
        self._pop(request_id)
        self._items[request_id] = found
        self._bytes += found.item.nbytes if found.item is not None else 0
        while self._items and (len(self._items) > self.max_requests or self._bytes > self.max_bytes):
            self._pop(next(iter(self._items)))

    def _pop(self, request_id: str) -> None:
        old = self._items.pop(request_id, None)
        if old is not None and old.item is not None:
            self._bytes -= old.item.nbytes

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
        self.own.mkdir(parents=True, exist_ok=True)
        kept = capture_log.segments(self.own)
        self._number = max([self._number] + [capture_log.segment_number(s) for s in kept]) + 1
        self._segment = self.own / f"seg-{self._number:08d}.cap"
        self._file = open(self._segment, "ab")
        self._file_bytes = self._file_records = 0
        gone = set(kept[:-1])  # keep the previous segment and the new one
        for segment in gone:
            capture_log.remove_segment(segment)
        # What is no longer on disk leaves memory too: the oldest entries, in put order.
        while self._items and next(iter(self._items.values())).segment in gone:
            self._pop(next(iter(self._items)))
        capture_log.remove_orphan_claims(self.own)
        self._tidy()

    def _check(self) -> None:
        """After an idle spell: another instance may have removed this one's directory as stale."""
        if not self._segment.exists():
            self._items.clear()
            self._bytes = 0
            self._file.close()
            self._file = None  # the next put opens a new segment
        self._tidy()

    def _tidy(self) -> None:
        capture_log.remove_stale(self.directory, self.own.name, self.stale_after, time.time())
        self._checked = time.monotonic()

    def find(self, request_id: str) -> Found | None:
        """The capture of ``request_id``: this instance's, else another instance's (also this
        process's before a restart), else None. It stays kept: a feedback that fails must not
        use it up."""
        found = self._items.get(request_id)
        if found is not None:
            return found
        hit = self._index.find(request_id)
        return None if hit is None else Found(*hit)

    def check_unlabelled(self, request_id: str, found: Found) -> None:
        """Conflict when ``found`` was labelled already, through any process."""
        if capture_log.is_claimed(found.segment, request_id):
            raise self._labelled(request_id)

    def _labelled(self, request_id: str) -> Conflict:
        return Conflict(f"request {request_id!r} of model {self.directory.parent.name!r} is already labelled "
                        "(a captured request takes one label)")

    def claim(self, request_id: str, found: Found) -> None:
        """Claim ``found`` for this label, atomically across processes: Conflict when it has
        one already, BadRequest when its segment was removed meanwhile."""
        if not capture_log.claim(found.segment, request_id):
            raise self._labelled(request_id)
        # A claim made after its segment's removal began may have lost its claims with it.
        if not found.segment.exists():
            capture_log.release(found.segment, request_id)
            raise BadRequest(f"no captured request {request_id!r} for model {self.directory.parent.name!r} "
                             "(its capture was forgotten just now)")

    def release(self, request_id: str, found: Found) -> None:
        """Undo :meth:`claim` (the label was not stored): a retry can claim it again."""
        capture_log.release(found.segment, request_id)

    def forget(self, request_id: str) -> None:
        """Drop the inputs of ``request_id`` once its label is stored; its claim answers a
        second label."""
        found = self._items.get(request_id)
        if found is not None and found.item is not None:
            self._bytes -= found.item.nbytes
            self._items[request_id] = Found(None, found.segment)

    def recent(self, limit: int) -> list[Captured]:
        """This instance's newest captures that still hold their inputs, oldest first."""
        out = []
        for found in reversed(self._items.values()):
            if found.item is not None:
                out.append(found.item)
                if len(out) >= limit:
                    break
        return out[::-1]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
