"""Label claims: one append-only log per capture segment (``seg-NNNNNNNN.claims``).

A captured request takes one label across every process and restart. A claim used to be one
empty ``O_EXCL`` file per labelled request (``seg-NNNNNNNN.labelled/<hash>``): correct, but a
file per label, thousands per instance. Now each segment has one log of 42-byte lines,
``+<hash>`` (claimed) and ``-<hash>`` (released: the label was not stored), appended under an
exclusive ``flock`` on the log: a claimer reads what was appended since its last look, and
appends its ``+`` only if the hash is not claimed, so of two processes exactly one wins (the
lock is what the feedback store and the repository already rely on, local or NFS v4). The log
lives and dies with its segment, so the files are two per segment, whatever the label rate.

Each process caches what it has read of each log (its inode and the offset read to), so a
claim reads only the lines appended since, not the whole log. Claims in the former per-request
directories are still honoured (a gateway upgraded beside an older one never labels twice).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

CLAIMS_SUFFIX = ".claims"
LEGACY_SUFFIX = ".labelled"
_CACHED_LOGS = 64  # a process has two live segments per model; older entries are simply re-read


def log_path(segment: Path) -> Path:
    return segment.with_name(segment.name[:-len(".cap")] + CLAIMS_SUFFIX)


def legacy_dir(segment: Path) -> Path:
    return segment.with_name(segment.name[:-len(".cap")] + LEGACY_SUFFIX)


def _hash(request_id: str) -> str:
    # Hashed: a client's id may hold any character and any length.
    return hashlib.sha256(request_id.encode()).hexdigest()[:40]


class _Seen:
    """What one process has read of one log."""

    def __init__(self, inode: int) -> None:
        self.inode = inode
        self.offset = 0
        self.claimed: set[str] = set()


class ClaimLogs:
    """Claims on segments' logs, with this process's cache of them (thread-safe)."""

    def __init__(self) -> None:
        self._seen: OrderedDict[Path, _Seen] = OrderedDict()
        self._lock = threading.Lock()

    def _catch_up(self, path: Path, fd: int) -> set[str]:
        """The hashes claimed in the log open at ``fd``: the cache plus the lines appended since
        (caller holds a lock on the file)."""
        stat = os.fstat(fd)
        with self._lock:
            seen = self._seen.get(path)
            if seen is None or seen.inode != stat.st_ino or seen.offset > stat.st_size:
                seen = _Seen(stat.st_ino)  # new, or replaced since (a segment number reused)
            self._seen[path] = seen
            self._seen.move_to_end(path)
            while len(self._seen) > _CACHED_LOGS:
                self._seen.popitem(last=False)
        data = os.pread(fd, stat.st_size - seen.offset, seen.offset)
        whole = data[:data.rfind(b"\n") + 1]  # a line still being written is read next time
        for line in whole.decode(errors="replace").splitlines():
            if line[:1] == "+":
                seen.claimed.add(line[1:])
            elif line[:1] == "-":
                seen.claimed.discard(line[1:])
        seen.offset += len(whole)
        return seen.claimed

    def claim(self, segment: Path, request_id: str) -> bool:
        """True for the one caller (of any process) that claims ``request_id``'s capture in
        ``segment``; False when it was claimed before."""
        digest = _hash(request_id)
        if (legacy_dir(segment) / digest).exists():
            return False
        path = log_path(segment)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            claimed = self._catch_up(path, fd)
            if digest in claimed:
                return False
            os.write(fd, f"+{digest}\n".encode())
            claimed.add(digest)
            return True
        finally:
            os.close(fd)  # releases the lock

    def release(self, segment: Path, request_id: str) -> None:
        """Undo :meth:`claim`: the label was not stored, a retry may claim again."""
        digest = _hash(request_id)
        (legacy_dir(segment) / digest).unlink(missing_ok=True)
        try:
            fd = os.open(log_path(segment), os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            return  # its segment (and claims) were removed meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, f"-{digest}\n".encode())
        finally:
            os.close(fd)

    def is_claimed(self, segment: Path, request_id: str) -> bool:
        digest = _hash(request_id)
        if (legacy_dir(segment) / digest).exists():
            return True
        path = log_path(segment)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            return digest in self._catch_up(path, fd)
        finally:
            os.close(fd)

    def forget(self, segment: Path) -> None:
        with self._lock:
            self._seen.pop(log_path(segment), None)
