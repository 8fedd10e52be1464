"""The epoch loop, shared by plain and elastic runs.

The loop reads and advances a state object (``epoch``, ``batch``, ``history`` and
``commit()``): for a plain run a :class:`PlainState`, under ``--elastic`` a
:class:`trainer.elastic_state.KerasState`, which Horovod rolls back to the last commit and
re-syncs when a worker is lost or added. Shards are recomputed from the current rank and
size at every epoch, so a resized elastic job splits the data over its new members.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import data as datamod
from .averaging import average_weights
from .distributed import average_across_ranks
from .objective import Objective, evaluate
from .schedule import learning_rate
from .step import make_train_step


@dataclass
class PlainState:
    epoch: int = 0
    batch: int = 0
    history: list = field(default_factory=list)

    def commit(self) -> None:
        """Nothing to snapshot: a plain run that loses a rank fails (and resumes from a checkpoint)."""


@dataclass
class LoopConfig:
    epochs: int
    batch_size: int
    lr: float
    warmup_epochs: float
    mode: str
    average_every: int
    average_optimizer_state: bool
    seed: int
    commit_every: int
    elastic: bool


def train(hvd, state, *, model, optimizer, objective: Objective, train_data, val_data,
          config: LoopConfig, compression, on_epoch_end: Callable[[object, dict], None]) -> None:
    allreduce = config.mode == "allreduce"
    step = make_train_step(model, optimizer, objective, hvd, allreduce=allreduce, compression=compression)
    while state.epoch < config.epochs:
        rank, size = hvd.rank(), hvd.size()
        shard = datamod.shard(train_data, rank, size, config.seed)
        steps = datamod.steps_per_epoch(len(train_data), size, config.batch_size)
        warmup = int(round(config.warmup_epochs * steps))
        sums = {"loss": 0.0, "correct": 0.0, "examples": 0.0}
        started = time.perf_counter()
        batches = datamod.epoch_batches(shard, batch_size=config.batch_size, steps=steps,
                                        seed=config.seed, rank=rank, epoch=state.epoch)
        for index, (x, y) in enumerate(batches):
            if index < state.batch:  # an elastic restart resumes mid-epoch
                continue
            iteration = int(optimizer.iterations.numpy())
            optimizer.learning_rate.assign(learning_rate(config.lr, size, iteration, warmup, scale=allreduce))
            loss, correct = step(x, y)
            sums["loss"] += float(loss) * len(x)
            sums["correct"] += float(correct)
            sums["examples"] += len(x)
            if not allreduce and (iteration + 1) % config.average_every == 0:
                average_weights(hvd, model, optimizer, include_optimizer=config.average_optimizer_state,
                                compression=compression)
            state.batch = index + 1
            if config.elastic and state.batch % config.commit_every == 0:
                state.commit()
        elapsed = time.perf_counter() - started
        if not allreduce:
            # End every epoch with the replicas equal, so checkpoints, the held-out score
            # and the published model are one model and not rank 0's private variant.
            average_weights(hvd, model, optimizer, include_optimizer=config.average_optimizer_state,
                            compression=compression)
        means = average_across_ranks(hvd, {
            "loss": sums["loss"] / max(sums["examples"], 1),
            "accuracy": sums["correct"] / max(sums["examples"], 1),
            "steps_per_s": steps / elapsed if elapsed > 0 else 0.0,
        })
        record = {"epoch": state.epoch + 1, "loss": means["loss"], "steps": steps,
                  "steps_per_s": means["steps_per_s"], "world_size": size,
                  "lr": float(optimizer.learning_rate.numpy())}
        if objective.classification:
            record["accuracy"] = means["accuracy"]
        if rank == 0:
            held_out = evaluate(model, objective, val_data.x, val_data.y)
            record.update({f"val_{k}": v for k, v in held_out.items()})
            print(_progress_line(record, config.epochs), flush=True, file=sys.stdout)
        state.history.append(record)
        state.epoch += 1
        state.batch = 0
        on_epoch_end(state, record)
        state.commit()


def _progress_line(record: dict, epochs: int) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['loss']:.4f}"]
    if "accuracy" in record:
        parts.append(f"accuracy {record['accuracy']:.4f}")
    parts.append(f"held-out loss {record['val_loss']:.4f}")
    if "val_accuracy" in record:
        parts.append(f"held-out accuracy {record['val_accuracy']:.4f}")
    parts.append(f"{record['steps_per_s']:.1f} steps/s on {record['world_size']} ranks")
    return "  ".join(parts)

