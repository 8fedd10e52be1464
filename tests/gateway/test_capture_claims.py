"""Label claims as one log per capture segment: the files stay two per segment however many
requests are labelled, a claim is still won once across processes, a released claim can be
claimed again, and a claim in the former per-request layout is honoured."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np

from gateway.loop import capture_log
from gateway.loop.capture import CAPTURE_DIR, Captured, CaptureStore
from gateway.loop.capture_claims import ClaimLogs, legacy_dir


def _item(value: float) -> Captured:
    return Captured(1, {"X": np.full((1, 4), value, np.float32)}, None, 16)


def _files(root) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


def test_labelling_every_capture_adds_one_file_per_segment_not_one_per_label(tmp_path):
    root = tmp_path / "clf" / CAPTURE_DIR
    store = CaptureStore(root, instance="a-1-0000", max_requests=1000, max_bytes=1 << 30)
    ids = [f"r{i}" for i in range(1000)]
    for i, request_id in enumerate(ids):
        store.put([request_id], _item(i))
    unlabelled = _files(root)
    for request_id in ids:
        store.claim(request_id, store.find(request_id))
    # Segments of 500 requests: 2 segments, 2 claims logs (it was 1,000 claim files).
    assert (unlabelled, _files(root)) == (2, 4)
    assert all(capture_log.is_claimed(store.find(r).segment, r) for r in ids)
    # The logs go with their segments as capture rotates.
    for i in range(1000, 2000):
        store.put([f"r{i}"], _item(i))
    assert sorted(p.name for p in store.own.iterdir()) == ["seg-00000003.cap", "seg-00000004.cap"]
    store.close()


_CLAIM = ("import sys; from pathlib import Path; from gateway.loop.capture_claims import ClaimLogs; "
          "logs = ClaimLogs(); seg = Path(sys.argv[1]); "
          "print(sum(logs.claim(seg, f'c{i}') for i in range(200)))")


def test_each_claim_is_won_once_across_processes_and_a_release_frees_it(tmp_path):
    segment = tmp_path / "seg-00000001.cap"
    segment.write_bytes(b"")
    claimers = [subprocess.Popen([sys.executable, "-c", _CLAIM, str(segment)], stdout=subprocess.PIPE, text=True)
                for _ in range(4)]
    won = [int(c.communicate(timeout=60)[0]) for c in claimers]
    assert sum(won) == 200  # every id claimed by exactly one of the four
    mine, other = ClaimLogs(), ClaimLogs()  # two processes' caches
    assert mine.is_claimed(segment, "c7") and not mine.claim(segment, "c7")
    mine.release(segment, "c7")
    assert not other.is_claimed(segment, "c7") and other.claim(segment, "c7") and not mine.claim(segment, "c7")


def test_a_claim_in_the_former_layout_is_honoured(tmp_path):
    segment = tmp_path / "seg-00000001.cap"
    segment.write_bytes(b"")
    logs = ClaimLogs()
    assert logs.claim(segment, "new")
    legacy_dir(segment).mkdir()
    (legacy_dir(segment) / hashlib.sha256(b"old").hexdigest()[:40]).touch()
    assert logs.is_claimed(segment, "old") and not logs.claim(segment, "old")
    capture_log.remove_segment(segment)
    assert list(tmp_path.iterdir()) == []
