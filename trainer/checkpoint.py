"""Per-epoch checkpoints written by rank 0, and ``--resume`` from the last one.

One ``.npz`` per run holds the model weights, the optimizer's variables and a JSON
header (epoch done, loss history, and a fingerprint of what the run trains on). It is
replaced atomically, so a crash while checkpointing leaves the previous one intact. A
checkpoint is only resumed by a run with the same fingerprint (same model, base version,
data and mode): resuming someone else's run would silently train the wrong thing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_repo.durable import atomic_write_bytes

from .errors import TrainerError

CHECKPOINT_FILE = "checkpoint.npz"


def fingerprint(**parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Checkpoint:
    epoch: int  # epochs completed
    fingerprint: str
    history: list[dict] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    optimizer: list[np.ndarray] = field(default_factory=list)


def save(directory: Path, ckpt: Checkpoint) -> Path:
    import io

    directory.mkdir(parents=True, exist_ok=True)
    header = {"epoch": ckpt.epoch, "fingerprint": ckpt.fingerprint, "history": ckpt.history,
              "n_weights": len(ckpt.weights), "n_optimizer": len(ckpt.optimizer)}
    arrays = {f"w{i}": w for i, w in enumerate(ckpt.weights)}
    arrays.update({f"o{i}": o for i, o in enumerate(ckpt.optimizer)})
    buffer = io.BytesIO()
    np.savez(buffer, header=np.array(json.dumps(header)), **arrays)
    path = directory / CHECKPOINT_FILE
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load(directory: Path, expected_fingerprint: str) -> Checkpoint | None:
    """The checkpoint in ``directory``, or None if there is none."""
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            header = json.loads(str(npz["header"]))
            weights = [npz[f"w{i}"] for i in range(header["n_weights"])]
            optimizer = [npz[f"o{i}"] for i in range(header["n_optimizer"])]
    except (OSError, ValueError, KeyError) as exc:
        raise TrainerError(f"checkpoint {path} is unreadable: {exc}") from None
    if header["fingerprint"] != expected_fingerprint:
        raise TrainerError(f"checkpoint {path} belongs to a different run (other model version, data or "
                           "mode); remove it or drop --resume")
    return Checkpoint(header["epoch"], header["fingerprint"], header["history"], weights, optimizer)


def remove(directory: Path) -> None:
    (directory / CHECKPOINT_FILE).unlink(missing_ok=True)
