"""The fine-tuning job: what every rank runs (``python -m trainer.job ...``).

Started by ``tunegate finetune`` through ``horovodrun --gloo``, or directly by a cluster
launcher (MPIJob, an Indexed Job with Horovod's rendezvous environment), or alone as one
rank. Every rank loads the serving version's Keras source and the data, trains its shard;
rank 0 then gates the candidate against the serving version and, only if it passes,
publishes it through converters (ONNX conversion, parity check, atomic publish). Rank 0
writes the outcome to ``--result-file`` so the launcher can report it whatever
horovodrun's exit status is.

Before anything is published every rank's weights are compared (:mod:`trainer.sync`): if
the replicas differ the job fails and names the variables that differ. Every job that trained
leaves ``metrics.json`` and ``curve.png`` in ``--report-dir``, whatever its outcome.

Exit status: 0 published, 2 bad input, 3 not promoted (gate failed), 1 anything else, the
replicas differing included (see :mod:`trainer.errors`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from model_repo.errors import Superseded

from . import checkpoint as ckpt
from .errors import (DECIDED_EXIT_CODES, EXIT_OK, OUTCOME_IN_RESULT_FILE, DataError, JobFailed, NotPromoted,
                     TrainerError)
from .options import add_job_arguments, validate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainer.job", description=__doc__.splitlines()[0])
    add_job_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    started_at = time.perf_counter()
    args = parse_args(argv)
    from .distributed import configure_horovod, configure_threads

    configure_horovod(args.cycle_time_ms, args.fusion_threshold_mb)  # read by hvd.init()
    import horovod.tensorflow as hvd

    hvd.init()
    threads = configure_threads(hvd, args.intra_op_threads)
    result: dict = {"status": "error"}
    code = EXIT_OK
    try:
        validate(args)
        result = fine_tune(hvd, args, threads, started_at)
    except Exception as exc:
        if not hasattr(exc, "status"):
            raise  # a bug, or Horovod losing a peer: the traceback is the report
        # Our errors (and converters' and model_repo's) carry a status; every rank reaches
        # the same ones, so only rank 0 speaks.
        code = int(getattr(exc, "exit_code", 1))
        kind = type(exc).__name__ if isinstance(exc, TrainerError) else "TrainerError"
        result = {"status": "not_promoted" if isinstance(exc, NotPromoted) else "error",
                  "error": kind, "message": str(exc), **getattr(exc, "details", {})}
        if hvd.rank() == 0:
            print(f"trainer: error: {exc}", file=sys.stderr, flush=True)
    if hvd.rank() == 0 and args.result_file:
        from model_repo.durable import atomic_write_json

        atomic_write_json(Path(args.result_file), result)
    if code in DECIDED_EXIT_CODES and args.result_file and os.environ.get(OUTCOME_IN_RESULT_FILE) == "1":
        return EXIT_OK  # the launcher reads the outcome from rank 0's file
    return code


@dataclass
class Inputs:
    base: object  # source.Base: the version fine-tuned from
    model: object
    train_data: object
    val_data: object
    objective: object
    gate: object


def load_inputs(hvd, args: argparse.Namespace) -> Inputs:
    from model_repo.feedback import last_sequence

    from .data import feedback_stores, load_data, split_validation
    from .distributed import broadcast_object
    from .features import input_names
    from .gate import Gate
    from .objective import check_inputs, choose_objective
    from .source import load_keras, resolve_base

    base = resolve_base(args.repo, args.model, args.version)
    model = load_keras(base)
    # The gateway may append feedback while ranks start at different moments: rank 0 pins
    # what the job trains on (every row up to the store's last sequence number now), and
    # every rank reads exactly that.
    stores = feedback_stores([*args.data, *(args.val_data or [])], repo_root=args.repo, model=args.model)
    through = {str(s): last_sequence(s) for s in stores} if hvd.rank() == 0 else None
    mix = plan_job_mix(args, base, through) if hvd.rank() == 0 else None
    through, mix = broadcast_object(hvd, (through, mix)) if stores else (None, None)
    # A model with several inputs reads each from the feedback store by its name.
    sources = dict(features=args.features, label=args.label, repo_root=args.repo, model=args.model,
                   through=through, inputs=input_names(model))
    data = load_data(args.data, **sources, mix=mix)
    if args.val_data:
        train_data, val_data = data, load_data(args.val_data, **sources)
    else:
        train_data, val_data = split_validation(data, args.val_split, args.seed)
    check_inputs(model, train_data.x, "training data")
    check_inputs(model, val_data.x, "held-out data")
    objective = choose_objective(model, train_data.y, args.loss, train_data.x)
    choose_objective(model, val_data.y, objective.name, val_data.x)
    gate = Gate.parse(args.gate)
    if gate.metric == "accuracy" and not objective.classification:
        raise DataError(f"--gate {args.gate}: accuracy needs a classifier; {objective.name} is not one")
    return Inputs(base, model, train_data, val_data, objective, gate)


def plan_job_mix(args: argparse.Namespace, base, through: dict[str, int] | None):
    """Rank 0's bounded mix of the model's own store (``trainer.mix``), or None: no
    ``--max-rows``, or ``feedback:`` is not among the training data."""
    from model_repo.feedback import feedback_dir
    from model_repo.ledger import trained_through

    from .data import feedback_stores
    from .mix import golden_path, plan_mix

    own = feedback_dir(args.repo, args.model)
    trains_on_own = any(s.resolve() == own.resolve()
                        for s in feedback_stores(args.data, repo_root=args.repo, model=args.model))
    if not args.max_rows or not trains_on_own:
        return None
    pinned = (through or {}).get(str(own))
    if pinned is None:
        pinned = next((v for k, v in (through or {}).items() if Path(k).resolve() == own.resolve()), 0)
    golden = golden_path(args.repo, args.model, args.golden, args.no_golden)
    return plan_mix(own, through=pinned, base_through=trained_through(base.manifest), max_rows=args.max_rows,
                    replay_fraction=args.replay_fraction, golden=golden, seed=args.seed)


def fine_tune(hvd, args: argparse.Namespace, threads: int, started_at: float) -> dict:
    import keras

    from .elastic_state import KerasState
    from .loop import LoopConfig, train
    from .objective import evaluate

    inputs = load_inputs(hvd, args)
    model = inputs.model
    optimizer = (keras.optimizers.Adam if args.optimizer == "adam" else keras.optimizers.SGD)(args.lr)
    # Build the optimizer's slots now rather than in the first step, so that rank 0's
    # values (fresh, or from a checkpoint) can be broadcast before any rank steps.
    optimizer.build(model.trainable_variables)
    compression = hvd.Compression.fp16 if args.compression == "fp16" else hvd.Compression.none
    checkpoint_dir = Path(args.checkpoint_dir or Path(args.repo) / args.model / ".checkpoints")
    fingerprint = ckpt.fingerprint(model=args.model, version=inputs.base.version, data=inputs.train_data.digest,
                                   val=inputs.val_data.digest, mode=args.mode, batch=args.batch_size,
                                   lr=args.lr, optimizer=args.optimizer)  # not epochs: resuming may extend a run
    before = evaluate(model, inputs.objective, inputs.val_data.x, inputs.val_data.y) if hvd.rank() == 0 else None
    state = _start_state(hvd, args, model, optimizer, checkpoint_dir, fingerprint)

    def on_epoch_end(st, record) -> None:
        if hvd.rank() == 0:
            ckpt.save(checkpoint_dir, ckpt.Checkpoint(
                st.epoch, fingerprint, list(st.history), [w.numpy() for w in model.weights],
                [v.numpy() for v in optimizer.variables]))

    config = LoopConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        warmup_epochs=args.warmup_epochs, mode=args.mode, average_every=args.average_every,
                        average_optimizer_state=args.average_optimizer_state, seed=args.seed,
                        commit_every=args.commit_every, elastic=args.elastic, started_at=started_at)
    run_kwargs = dict(model=model, optimizer=optimizer, objective=inputs.objective, train_data=inputs.train_data,
                      val_data=inputs.val_data, config=config, compression=compression, on_epoch_end=on_epoch_end)
    if args.elastic:
        elastic_state = KerasState(hvd, model, optimizer, epoch=state.epoch, batch=0, history=state.history)
        hvd.elastic.run(lambda st: train(hvd, st, **run_kwargs))(elastic_state)
        state = elastic_state
    else:
        train(hvd, state, **run_kwargs)
    result = conclude(hvd, args, inputs, before=before, history=state.history, threads=threads)
    if result["status"] == "published":
        ckpt.remove(checkpoint_dir)  # consumed; a run that published nothing can be resumed
    return result


def _start_state(hvd, args, model, optimizer, checkpoint_dir: Path, fingerprint: str):
    """Rank 0's starting point (fresh, or the last checkpoint), the same on every rank."""
    from .distributed import broadcast_object, broadcast_variables
    from .loop import PlainState

    state = PlainState()
    if hvd.rank() == 0 and args.resume:
        found = ckpt.load(checkpoint_dir, fingerprint)
        if found is None:
            print(f"no checkpoint in {checkpoint_dir}; starting from the serving version", flush=True)
        else:
            for var, value in zip(model.weights, found.weights):
                var.assign(value)
            for var, value in zip(optimizer.variables, found.optimizer):
                var.assign(value)
            state.epoch, state.history = found.epoch, found.history
            print(f"resuming after epoch {found.epoch} from {checkpoint_dir}", flush=True)
    state.epoch, state.history = broadcast_object(hvd, (state.epoch, state.history))
    broadcast_variables(hvd, list(model.weights) + list(optimizer.variables))
    return state


def conclude(hvd, args: argparse.Namespace, inputs: Inputs, *, before, history: list, threads: int) -> dict:
    """Check the replicas agree, gate, report and (only if all is well) publish. Every job
    that trained leaves its report (metrics.json, curve.png) in the report directory,
    whatever the outcome; a published version carries a copy."""
    from .objective import evaluate
    from .report import timing
    from .snapshot import attempt, data_snapshot
    from .sync import check_consistency

    try:
        checksums, inconsistent = check_consistency(hvd, inputs.model), None
    except JobFailed as exc:
        checksums, inconsistent = exc.details["weights_checksums"], exc
    if hvd.rank() != 0:
        if inconsistent:
            raise inconsistent
        return {"status": "worker_done"}
    base = inputs.base
    after = evaluate(inputs.model, inputs.objective, inputs.val_data.x, inputs.val_data.y)
    summary = {
        "model": args.model, "parent_version": base.version, "data_digest": inputs.train_data.digest,
        "val_data_digest": inputs.val_data.digest, "data_sources": inputs.train_data.sources,
        "examples": {"train": len(inputs.train_data), "held_out": len(inputs.val_data)},
        "before": before, "after": after, "history": history, "timing": timing(history),
        "world_size": hvd.size(), "mode": args.mode, "intra_op_threads": threads,
        "weights_checksums": checksums, "hyperparameters": _hyperparameters(args, inputs, hvd.size()),
        "data_snapshot": data_snapshot(inputs.train_data, inputs.val_data),
    }
    if inconsistent is None:
        summary["gate"] = inputs.gate.decide(before, after)
        print(summary["gate"]["message"], flush=True)
    summary["report"] = _write_report(args, base, summary)
    model_dir = base.repo.model_dir(args.model)
    if inconsistent:
        attempt(model_dir, summary["data_snapshot"], "failed", base.version, str(inconsistent))
        raise JobFailed(str(inconsistent), details={**inconsistent.details, "summary": summary})
    if not summary["gate"]["passed"]:
        message = (f"{summary['gate']['message']}; {args.model} version {base.version} stays the base, "
                   "nothing was published")
        attempt(model_dir, summary["data_snapshot"], "not_promoted", base.version, message)
        raise NotPromoted(message, details={"summary": summary})
    try:
        manifest = _publish(inputs.model, base, inputs.val_data, summary)
    except Exception as exc:
        # The converters name the stage around the repository's refusal: find it beneath.
        superseded = next((e for e in (exc, exc.__cause__) if isinstance(e, Superseded)), None)
        if superseded is None:
            raise
        attempt(model_dir, summary["data_snapshot"], "superseded", base.version, str(superseded))
        raise NotPromoted(str(superseded), details={"summary": summary}) from None
    print(f"published {args.model} version {manifest.version} (parent {base.version})", flush=True)
    return {"status": "published", "version": manifest.version, "summary": summary}


def _hyperparameters(args: argparse.Namespace, inputs: Inputs, world_size: int) -> dict:
    return {
        "epochs": args.epochs, "batch_size_per_rank": args.batch_size, "lr": args.lr,
        "lr_scaled_to": args.lr * world_size if args.mode == "allreduce" else args.lr,
        "warmup_epochs": args.warmup_epochs, "optimizer": args.optimizer, "loss": inputs.objective.name,
        "compression": args.compression, "average_every": args.average_every if args.mode == "average" else None,
        "average_optimizer_state": args.average_optimizer_state, "seed": args.seed, "elastic": args.elastic,
        "cycle_time_ms": args.cycle_time_ms, "fusion_threshold_mb": args.fusion_threshold_mb,
    }


def _write_report(args: argparse.Namespace, base, summary: dict) -> dict[str, str]:
    from .report import write_report

    directory = Path(args.report_dir or Path(args.repo) / args.model / ".training")
    return {name: str(path) for name, path in write_report(summary, directory, _curve_title(base)).items()}


def _curve_title(base) -> str:
    return f"{base.name}: fine-tuned from version {base.version}"


def _publish(model, base, val_data, summary: dict):
    from converters import publish_keras_model

    from .features import numeric_part, parity_sample
    from .report import CURVE_FILE, METRICS_FILE, write_report

    with tempfile.TemporaryDirectory(prefix="tunegate-train-") as tmp:
        files = write_report(summary, Path(tmp), _curve_title(base))
        training = {k: summary[k] for k in ("hyperparameters", "world_size", "mode", "examples",
                                             "val_data_digest", "data_sources")}
        training["files"] = {"curve": CURVE_FILE, "metrics": METRICS_FILE}
        fields = {"data_digest": summary["data_digest"],
                  "metrics": {"before": summary["before"], "after": summary["after"], "gate": summary["gate"]},
                  "training": training, "data_snapshot": summary["data_snapshot"]}
        numeric = numeric_part(val_data.x)
        if numeric is not None:
            # The drift reference: the held-out rows are a random sample of the training inputs.
            # Text has none (drift is not measured on text: docs/preprocessing-layers.md); a
            # structured model's is its first float input, named in the summary.
            from model_repo.drift import summarise

            fields["input_summary"] = summarise(numeric[1], input=numeric[0]).to_dict()
        # Parity on held-out rows; for text the converter checks its generated cases as well.
        return publish_keras_model(
            model, base.repo, base.name, parent_version=base.version, sample=parity_sample(val_data.x, 64),
            manifest_fields=fields, extra_files={CURVE_FILE: files["curve"], METRICS_FILE: files["metrics"]})


if __name__ == "__main__":
    sys.exit(main())
