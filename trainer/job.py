"""The fine-tuning job: what every rank runs (``python -m trainer.job ...``).

Started by ``tunegate finetune`` through ``horovodrun --gloo``, or directly by a cluster
launcher (MPIJob, an Indexed Job with Horovod's rendezvous environment), or alone as one
rank. Every rank loads the serving version's Keras source and the data, trains its shard;
rank 0 then gates the candidate against the serving version and, only if it passes,
publishes it through converters (ONNX conversion, parity check, atomic publish). Rank 0
writes the outcome to ``--result-file`` so the launcher can report it whatever
horovodrun's exit status is.

Exit status: 0 published, 2 bad input, 3 not promoted (gate failed), 1 anything else
(see :mod:`trainer.errors`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from . import checkpoint as ckpt
from .errors import EXIT_OK, DataError, NotPromoted, TrainerError
from .options import add_job_arguments, validate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainer.job", description=__doc__.splitlines()[0])
    add_job_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import horovod.tensorflow as hvd

    hvd.init()
    from .distributed import configure_threads

    threads = configure_threads(hvd, args.intra_op_threads)
    result: dict = {"status": "error"}
    code = EXIT_OK
    try:
        validate(args)
        result = fine_tune(hvd, args, threads)
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
    return code


def fine_tune(hvd, args: argparse.Namespace, threads: int) -> dict:
    import keras

    from model_repo.feedback import snapshot

    from .data import feedback_stores, load_data, split_validation
    from .distributed import broadcast_variables, gather_checksums
    from .elastic_state import KerasState
    from .gate import Gate
    from .loop import LoopConfig, PlainState, train
    from .objective import check_inputs, choose_objective, evaluate
    from .source import load_keras, resolve_base

    rank = hvd.rank()
    base = resolve_base(args.repo, args.model, args.version)
    model = load_keras(base)
    # The gateway may append feedback while ranks start at different moments: rank 0 pins
    # what the job trains on, and every rank reads exactly that.
    stores = feedback_stores([*args.data, *(args.val_data or [])], repo_root=args.repo, model=args.model)
    snapshots = {str(s): snapshot(s) for s in stores} if rank == 0 else None
    snapshots = hvd.broadcast_object(snapshots, root_rank=0) if stores else None
    sources = dict(features=args.features, label=args.label, repo_root=args.repo, model=args.model,
                   snapshots=snapshots)
    data = load_data(args.data, **sources)
    if args.val_data:
        train_data = data
        val_data = load_data(args.val_data, **sources)
    else:
        train_data, val_data = split_validation(data, args.val_split, args.seed)
    check_inputs(model, train_data.x, "training data")
    check_inputs(model, val_data.x, "held-out data")
    objective = choose_objective(model, train_data.y, args.loss)
    choose_objective(model, val_data.y, objective.name)
    gate = Gate.parse(args.gate)
    if gate.metric == "accuracy" and not objective.classification:
        raise DataError(f"--gate {args.gate}: accuracy needs a classifier; {objective.name} is not one")

    optimizer = (keras.optimizers.Adam if args.optimizer == "adam" else keras.optimizers.SGD)(args.lr)
    # Build the optimizer's slots now rather than in the first step, so that rank 0's
    # values (fresh, or from a checkpoint) can be broadcast before any rank steps.
    optimizer.build(model.trainable_variables)
    compression = hvd.Compression.fp16 if args.compression == "fp16" else hvd.Compression.none
    checkpoint_dir = Path(args.checkpoint_dir or Path(args.repo) / args.model / ".checkpoints")
    fingerprint = ckpt.fingerprint(model=args.model, version=base.version, data=train_data.digest,
                                   val=val_data.digest, mode=args.mode, batch=args.batch_size,
                                   lr=args.lr, optimizer=args.optimizer)  # not epochs: resuming may extend a run

    before = evaluate(model, objective, val_data.x, val_data.y) if rank == 0 else None
    state = PlainState()
    if rank == 0 and args.resume:
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
    state.epoch, state.history = hvd.broadcast_object((state.epoch, state.history), root_rank=0)
    broadcast_variables(hvd, list(model.weights) + list(optimizer.variables))

    def on_epoch_end(st, record) -> None:
        if hvd.rank() == 0:
            ckpt.save(checkpoint_dir, ckpt.Checkpoint(
                st.epoch, fingerprint, list(st.history), [w.numpy() for w in model.weights],
                [v.numpy() for v in optimizer.variables]))

    config = LoopConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        warmup_epochs=args.warmup_epochs, mode=args.mode, average_every=args.average_every,
                        average_optimizer_state=args.average_optimizer_state, seed=args.seed,
                        commit_every=args.commit_every, elastic=args.elastic)
    run_kwargs = dict(model=model, optimizer=optimizer, objective=objective, train_data=train_data,
                      val_data=val_data, config=config, compression=compression, on_epoch_end=on_epoch_end)
    if args.elastic:
        elastic_state = KerasState(hvd, model, optimizer, epoch=state.epoch, batch=0, history=state.history)
        hvd.elastic.run(lambda st: train(hvd, st, **run_kwargs))(elastic_state)
        state = elastic_state
    else:
        train(hvd, state, **run_kwargs)

    checksums = gather_checksums(hvd, model)
    world_size = hvd.size()
    if rank != 0:
        return {"status": "worker_done"}
    after = evaluate(model, objective, val_data.x, val_data.y)
    decision = gate.decide(before, after)
    print(decision["message"], flush=True)
    summary = {
        "model": args.model, "parent_version": base.version, "data_digest": train_data.digest,
        "val_data_digest": val_data.digest, "data_sources": train_data.sources,
        "examples": {"train": len(train_data), "held_out": len(val_data)},
        "before": before, "after": after, "gate": decision, "history": state.history,
        "world_size": world_size, "mode": args.mode, "intra_op_threads": threads,
        "weights_checksums": checksums,
        "hyperparameters": {
            "epochs": args.epochs, "batch_size_per_rank": args.batch_size, "lr": args.lr,
            "lr_scaled_to": args.lr * world_size if args.mode == "allreduce" else args.lr,
            "warmup_epochs": args.warmup_epochs, "optimizer": args.optimizer, "loss": objective.name,
            "compression": args.compression, "average_every": args.average_every if args.mode == "average" else None,
            "average_optimizer_state": args.average_optimizer_state, "seed": args.seed, "elastic": args.elastic,
        },
    }
    if not decision["passed"]:
        raise NotPromoted(f"{decision['message']}; {args.model} version {base.version} stays in service, "
                          "nothing was published", details={"summary": summary})
    manifest = _publish(model, base, val_data, summary)
    ckpt.remove(checkpoint_dir)
    print(f"published {args.model} version {manifest.version} (parent {base.version})", flush=True)
    return {"status": "published", "version": manifest.version, "summary": summary}


def _publish(model, base, val_data, summary: dict):
    from converters import publish_keras_model

    from .report import CURVE_FILE, METRICS_FILE, write_curve, write_metrics

    with tempfile.TemporaryDirectory(prefix="tunegate-train-") as tmp:
        curve = write_curve(summary["history"], Path(tmp) / "curve.png",
                            f"{base.name}: fine-tuned from version {base.version}",
                            parent=summary["before"], gate_metric=summary["gate"]["metric"])
        metrics = write_metrics(summary, Path(tmp) / "metrics.json")
        training = {k: summary[k] for k in ("hyperparameters", "world_size", "mode", "examples",
                                             "val_data_digest", "data_sources")}
        training["files"] = {"curve": CURVE_FILE, "metrics": METRICS_FILE}
        return publish_keras_model(
            model, base.repo, base.name, parent_version=base.version,
            sample={"x": val_data.x[:64]},
            manifest_fields={"data_digest": summary["data_digest"],
                             "metrics": {"before": summary["before"], "after": summary["after"],
                                         "gate": summary["gate"]},
                             "training": training},
            extra_files={CURVE_FILE: curve, METRICS_FILE: metrics})


if __name__ == "__main__":
    sys.exit(main())
