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
from .distributed import gather_across_ranks
from .objective import Objective, evaluate
from .schedule import learning_rate
from .step import make_train_step
from .sync import sync_non_trainable


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
    started_at: float = field(default_factory=time.perf_counter)  # the job's start: time to first step


@dataclass
class EpochTally:
    """One rank's sums over an epoch. The rate leaves out the run's first step, which traces
    the step function (seconds where a step takes milliseconds)."""
    loss: float = 0.0
    correct: float = 0.0
    examples: int = 0
    wall_s: float = 0.0
    rated_s: float = 0.0
    rated_steps: int = 0
    rated_examples: int = 0
    first_step_s: float = -1.0  # seconds from the job's start to the end of its first step


def train(hvd, state, *, model, optimizer, objective: Objective, train_data, val_data,
          config: LoopConfig, compression, on_epoch_end: Callable[[object, dict], None]) -> None:
    allreduce = config.mode == "allreduce"
    step = make_train_step(model, optimizer, objective, hvd, allreduce=allreduce, compression=compression)

    def average() -> None:
        average_weights(hvd, model, optimizer, include_optimizer=config.average_optimizer_state,
                        compression=compression)

    traced = False
    while state.epoch < config.epochs:
        tally, steps = _run_epoch(hvd, state, step, optimizer, train_data, config, traced=traced, average=average)
        traced = True
        # End every epoch with the replicas equal, so checkpoints, the held-out score and the
        # published model are one model and not rank 0's private variant: average mode
        # averages everything, allreduce mode the layers' own state (see trainer.sync).
        if allreduce:
            sync_non_trainable(hvd, model)
        else:
            average()
        record = {"epoch": state.epoch + 1, "steps": steps, "world_size": hvd.size(),
                  "lr": float(optimizer.learning_rate.numpy()),
                  **_merge_ranks(hvd, tally, objective.classification)}
        if hvd.rank() == 0:
            held_out = evaluate(model, objective, val_data.x, val_data.y)
            record.update({f"val_{k}": v for k, v in held_out.items()})
            print(_progress_line(record, config.epochs), flush=True, file=sys.stdout)
        state.history.append(record)
        state.epoch += 1
        state.batch = 0
        on_epoch_end(state, record)
        state.commit()


def _run_epoch(hvd, state, step, optimizer, train_data, config: LoopConfig, *, traced: bool,
               average: Callable[[], None]) -> tuple[EpochTally, int]:
    rank, size = hvd.rank(), hvd.size()
    allreduce = config.mode == "allreduce"
    shard = datamod.shard(train_data, rank, size, config.seed)
    steps = datamod.steps_per_epoch(len(train_data), size, config.batch_size)
    warmup = int(round(config.warmup_epochs * steps))
    tally = EpochTally()
    started = time.perf_counter()
    batches = datamod.epoch_batches(shard, batch_size=config.batch_size, steps=steps,
                                    seed=config.seed, rank=rank, epoch=state.epoch)
    for index, (x, y) in enumerate(batches):
        if index < state.batch:  # an elastic restart resumes mid-epoch
            continue
        before = time.perf_counter()
        iteration = int(optimizer.iterations.numpy())
        optimizer.learning_rate.assign(learning_rate(config.lr, size, iteration, warmup, scale=allreduce))
        loss, correct = step(x, y)
        tally.loss += float(loss) * len(y)  # float() waits for the step: the times below are real
        tally.correct += float(correct)
        tally.examples += len(y)
        if not allreduce and (iteration + 1) % config.average_every == 0:
            average()
        now = time.perf_counter()
        if traced:
            tally.rated_s += now - before
            tally.rated_steps += 1
            tally.rated_examples += len(y)
        else:
            tally.first_step_s = now - config.started_at
            traced = True
        state.batch = index + 1
        if config.elastic and state.batch % config.commit_every == 0:
            state.commit()
    tally.wall_s = time.perf_counter() - started
    return tally, steps


def _merge_ranks(hvd, tally: EpochTally, classification: bool) -> dict:
    """The epoch as the job saw it: loss and accuracy over every rank's examples, the wall
    time of the slowest rank, and the rate of the slowest rank (the one every allreduce
    waits for), alone and times the ranks (the job's samples/s)."""
    rate = tally.rated_examples / tally.rated_s if tally.rated_s > 0 else 0.0
    steps_rate = tally.rated_steps / tally.rated_s if tally.rated_s > 0 else 0.0
    per_rank = gather_across_ranks(hvd, {
        "loss": tally.loss, "correct": tally.correct, "examples": tally.examples, "wall_s": tally.wall_s,
        "rate": rate, "steps_rate": steps_rate, "first_step_s": tally.first_step_s})
    examples = max(sum(per_rank["examples"]), 1)
    slowest = min(per_rank["rate"])
    record = {"loss": sum(per_rank["loss"]) / examples, "wall_s": max(per_rank["wall_s"]),
              "samples_per_s_slowest_rank": slowest, "samples_per_s": slowest * hvd.size(),
              "steps_per_s": min(per_rank["steps_rate"])}
    if classification:
        record["accuracy"] = sum(per_rank["correct"]) / examples
    if tally.first_step_s >= 0:
        record["time_to_first_step_s"] = max(per_rank["first_step_s"])
    return record


def _progress_line(record: dict, epochs: int) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['loss']:.4f}"]
    if "accuracy" in record:
        parts.append(f"accuracy {record['accuracy']:.4f}")
    parts.append(f"held-out loss {record['val_loss']:.4f}")
    if "val_accuracy" in record:
        parts.append(f"held-out accuracy {record['val_accuracy']:.4f}")
    parts.append(f"{record['samples_per_s']:.0f} samples/s on {record['world_size']} ranks, "
                 f"{record['wall_s']:.1f} s")
    return "  ".join(parts)

