"""Where the requests that the other gateway instances captured for one model are on disk.

Built incrementally, like ``model_repo.feedback.FeedbackScan``: each :meth:`CaptureIndex.refresh`
reads only the bytes appended to the other instances' segments since the last one, and of
each record only its id (the inputs are read when a label names it). A segment that is gone
(rotated out, or its instance's directory removed as stale) takes its ids with it, so the
index holds at most what those segments hold. One caller at a time: the capture thread.
"""

from __future__ import annotations

from pathlib import Path

from . import capture_log
from .capture_log import Captured


class CaptureIndex:
    def __init__(self, root: Path, own: str) -> None:
        self.root = root
        self.own = own
        self._next: dict[Path, int] = {}  # segment -> where its next read starts; -1: unreadable after
        self._ids: dict[str, tuple[Path, int]] = {}  # request id -> (segment, record offset)
        self._by_segment: dict[Path, list[str]] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def find(self, request_id: str) -> tuple[Captured, Path] | None:
        """The capture of ``request_id`` by another instance and its segment, refreshing the
        index when it does not know the id (or knew a record that is gone since)."""
        for attempt in range(2):
            where = self._ids.get(request_id)
            if where is None and attempt == 0:
                self.refresh()
                where = self._ids.get(request_id)
            if where is None:
                return None
            record = capture_log.read(*where)
            if record is not None and record[0] == request_id:
                return record[1], where[0]
            self._ids.pop(request_id, None)  # its segment went away: look again once
        return None

    def refresh(self) -> None:
        live = self._segments()
        for gone in [s for s in self._next if s not in live]:
            self._forget(gone)
        for segment in sorted(live):  # a later capture of a reused id wins
            start = self._next.get(segment, 0)
            if start < 0:
                continue
            try:
                records, end = capture_log.scan(segment, start)
            except FileNotFoundError:
                continue  # removed since it was listed: the next refresh forgets it
            self._next[segment] = end
            ids = self._by_segment.setdefault(segment, [])
            for request_id, offset in records:
                self._ids[request_id] = (segment, offset)
                ids.append(request_id)

    def _segments(self) -> set[Path]:
        found = set(capture_log.segments(self.root))  # written before instance directories
        for directory in capture_log.instance_dirs(self.root):
            if directory.name != self.own:
                found.update(capture_log.segments(directory))
        return found

    def _forget(self, segment: Path) -> None:
        self._next.pop(segment, None)
        for request_id in self._by_segment.pop(segment, ()):
            if self._ids.get(request_id, (None,))[0] == segment:
                del self._ids[request_id]
