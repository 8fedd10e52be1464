"""Live input bins shared between processes: ``<repo>/<model>/.loop/drift/<instance>.json``.

Each worker and replica samples its own share of a model's traffic, so, like canary
evidence (:mod:`gateway.loop.evidence`), each writes its window's counts to its own file
(atomic and fsynced) and every process sums every file: all of them show the same score,
and the leader's trigger sees all the traffic. A file holds the process's counts per time
slot (slot ``i`` covers ``[i * slot_seconds, (i + 1) * slot_seconds)`` of wall-clock time),
so a reader keeps exactly the slots inside its own window; a dead process's file ages out
of the window on its own and is removed once it is long stale. Counts binned against
another reference version, or with other slot widths, are not comparable and are skipped;
so is a file that does not parse.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from model_repo.durable import atomic_write_json

from .evidence import LOOP_DIR, other_processes

log = logging.getLogger("tunegate.drift")
DRIFT_DIR = "drift"
STALE_WINDOWS = 10  # a file untouched for this many windows belongs to a process long gone


def drift_dir(repo_root: Path, model: str) -> Path:
    return Path(repo_root) / model / LOOP_DIR / DRIFT_DIR


def write_window(directory: Path, instance: str, reference: int, slot_seconds: float,
                 slots: dict[int, np.ndarray]) -> None:
    """This process's counts per slot (blocking)."""
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / f"{instance}.json", {
        "instance": instance, "reference_version": reference, "slot_seconds": slot_seconds,
        "written_at": time.time(), "slots": {str(i): c.tolist() for i, c in slots.items()}})


def read_windows(directory: Path, *, exclude: str, reference: int, slot_seconds: float, first_slot: int,
                 shape: tuple[int, int], window_seconds: float) -> tuple[np.ndarray, int]:
    """Every other process's counts in slots ``>= first_slot``, summed, and how many files
    counted (blocking)."""
    total, counted = np.zeros(shape, dtype=np.int64), 0

    def parse(path: Path, data: dict) -> list[np.ndarray] | None:
        if float(data["written_at"]) < time.time() - STALE_WINDOWS * window_seconds:
            path.unlink(missing_ok=True)
            return None
        if int(data["reference_version"]) != reference or float(data["slot_seconds"]) != slot_seconds:
            return None
        slots = [np.asarray(c, dtype=np.int64) for i, c in data["slots"].items() if int(i) >= first_slot]
        if any(c.shape != shape for c in slots):
            raise ValueError(f"counts shaped {[c.shape for c in slots]}, expected {shape}")
        return slots

    for slots in other_processes(directory, exclude, parse, "drift counts"):
        for counts in slots:
            total += counts
        counted += 1
    return total, counted
