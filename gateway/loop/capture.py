"""Request capture: the inputs of recent infer requests, so feedback can send only a label.

Per model, bounded by count and bytes, kept in memory and appended to a log on disk
(``<repo>/<model>/.capture/seg-NNNNNNNN.cap``; hidden, so Triton and the version scan
ignore it). Segments rotate at half the byte budget and only the two newest are kept, so
the disk holds at most about ``capture_max_bytes`` per model. A restarted gateway reads
them back: a label can arrive after a restart.

Writes are flushed to the OS but not fsynced: a gateway crash loses nothing, a power cut
may lose the last captures; fsyncing every inference would put a disk flush on the hot
path. All of a store's work (disk and memory) runs on one worker thread, in order, so the
event loop never waits for it and the store needs no lock.

Feedback that names a captured request reads it with :meth:`CaptureStore.peek` and forgets
it only after its record is stored, so a feedback that fails leaves the capture for a retry.
A model that does not batch is captured as one example (a leading axis of 1).

Record: ``u32 length | u32 crc32 | payload``; payload: ``u32 header length | header JSON
({"id", "version", "predicted"}) | .npz of the inputs``.
"""

from __future__ import annotations

import io
import json
import logging
import re
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from model_repo import datatypes

from ..core.errors import BadRequest
from ..core.signature import Signature

log = logging.getLogger("tunegate.capture")

CAPTURE_DIR = ".capture"
_SEGMENT_RE = re.compile(r"^seg-(\d{8})\.cap$")
_HEADER = struct.Struct("<II")


@dataclass
class Captured:
    version: int
    inputs: dict[str, np.ndarray]
    predicted: np.ndarray | None  # class per row when the first output is a score matrix
    nbytes: int

    @property
    def rows(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


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


def _encode(request_id: str, item: Captured) -> bytes:
    header = json.dumps({"id": request_id, "version": item.version,
                         "predicted": None if item.predicted is None else item.predicted.tolist()}).encode()
    blob = io.BytesIO()
    np.savez(blob, **item.inputs)
    payload = struct.pack("<I", len(header)) + header + blob.getvalue()
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _decode(payload: bytes) -> tuple[str, Captured]:
    (n,) = struct.unpack_from("<I", payload, 0)
    header = json.loads(payload[4:4 + n])
    with np.load(io.BytesIO(payload[4 + n:]), allow_pickle=False) as npz:
        inputs = {k: npz[k] for k in npz.files}
    predicted = None if header["predicted"] is None else np.asarray(header["predicted"])
    return header["id"], Captured(int(header["version"]), inputs, predicted, sum(a.nbytes for a in inputs.values()))


class CaptureStore:
    """One model's captures. Every method runs on the capture thread (see module doc)."""

    def __init__(self, directory: Path, *, max_requests: int, max_bytes: int) -> None:
        self.directory = directory
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Captured] = OrderedDict()
        self._bytes = 0
        self._file = None
        self._file_bytes = 0
        self._loaded = False

    def _load(self) -> None:
        self._loaded = True
        for path in self._segments():
            data = path.read_bytes()
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, crc = _HEADER.unpack_from(data, offset)
                payload = data[offset + _HEADER.size:offset + _HEADER.size + length]
                if len(payload) < length or zlib.crc32(payload) != crc:
                    break  # a torn tail from a crash: what follows it was never acknowledged
                try:
                    request_id, item = _decode(payload)
                except (ValueError, KeyError, struct.error) as exc:
                    log.warning("%s: unreadable capture at byte %d: %s", path, offset, exc)
                    break
                self._remember(request_id, item)
                offset += _HEADER.size + length

    def _segments(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if _SEGMENT_RE.match(p.name))

    def _remember(self, request_id: str, item: Captured) -> None:
        old = self._items.pop(request_id, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._items[request_id] = item
        self._bytes += item.nbytes
        while self._items and (len(self._items) > self.max_requests or self._bytes > self.max_bytes):
            _, dropped = self._items.popitem(last=False)
            self._bytes -= dropped.nbytes

    def put(self, request_ids: list[str], item: Captured) -> None:
        if not self._loaded:
            self._load()
        for request_id in request_ids:
            self._remember(request_id, item)
            record = _encode(request_id, item)
            if self._file is None or self._file_bytes + len(record) > max(self.max_bytes // 2, 1):
                self._rotate()
            self._file.write(record)
            self._file_bytes += len(record)
        self._file.flush()

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        segments = self._segments()
        number = int(_SEGMENT_RE.match(segments[-1].name).group(1)) + 1 if segments else 1
        self._file = open(self.directory / f"seg-{number:08d}.cap", "ab")
        self._file_bytes = 0
        for old in segments[:-1]:  # keep the previous segment and the new one
            old.unlink(missing_ok=True)

    def peek(self, request_id: str) -> Captured | None:
        """The capture for ``request_id``, still kept: a feedback that fails must not use it up."""
        if not self._loaded:
            self._load()
        return self._items.get(request_id)

    def forget(self, request_id: str) -> None:
        """Forget ``request_id`` from memory once its label is stored: one label per request."""
        item = self._items.pop(request_id, None)
        if item is not None:
            self._bytes -= item.nbytes

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
