"""The fine-tuning job's options, shared by the job (``python -m trainer.job``) and the
launcher (``tunegate finetune``), which forwards them to every rank unchanged."""

from __future__ import annotations

import argparse

from .distributed import DEFAULT_CYCLE_TIME_MS, DEFAULT_FUSION_THRESHOLD_MB
from .gate import DEFAULT_GATE
from .objective import LOSSES

# (flags, argparse keywords). The launcher turns parsed values back into these flags.
JOB_OPTIONS: list[tuple[tuple[str, ...], dict]] = [
    (("--repo",), dict(required=True, help="model repository root")),
    (("--model",), dict(required=True, help="model to fine-tune")),
    (("--version",), dict(type=int, help="version to start from (default: the serving one)")),
    (("--data",), dict(nargs="+", required=True, metavar="PATH",
                       help=".npz/.csv/.parquet files, feedback-store directories, or 'feedback:' "
                            "for the model's own feedback store")),
    (("--features",), dict(type=lambda s: s.split(","), metavar="COL,...",
                           help="feature columns/arrays (default: all but the label; 'x' in .npz)")),
    (("--label",), dict(help="label column/array (default: 'label'; 'y' in .npz)")),
    (("--max-rows",), dict(type=int, default=20_000, metavar="N",
                           help="bound the rows a job reads of the model's own feedback store ('feedback:'): "
                                "rows since the base version's snapshot, a replay sample of older rows and "
                                "the golden set, N in all (0: read the whole store)")),
    (("--replay-fraction",), dict(type=float, default=0.3, metavar="F",
                                  help="share of the mix that rehearses older rows (replay and golden set)")),
    (("--golden",), dict(metavar="PATH", help="the anchor set trained on with --max-rows "
                                              "(default: <repo>/<model>/anchor.npz when it exists; never the shadow's golden.npz)")),
    (("--no-golden",), dict(action="store_true", help="train on no golden set")),
    (("--val-data",), dict(nargs="+", metavar="PATH", help="held-out data for the gate")),
    (("--val-split",), dict(type=float, default=0.2, metavar="F",
                            help="fraction of --data held out for the gate when --val-data is not given")),
    (("--mode",), dict(choices=["allreduce", "average"], default="allreduce",
                       help="allreduce: average gradients every step; average: local steps, "
                            "average weights every K steps")),
    (("--average-every",), dict(type=int, default=10, metavar="K", help="averaging period in steps")),
    (("--average-optimizer-state",), dict(action="store_true",
                                          help="average the optimizer's slots too (average mode)")),
    (("--epochs",), dict(type=int, default=5)),
    (("--batch-size",), dict(type=int, default=32, help="per rank")),
    (("--lr",), dict(type=float, default=1e-3, help="base learning rate (scaled by the world size "
                                                    "in allreduce mode)")),
    (("--optimizer",), dict(choices=["adam", "sgd"], default="adam")),
    (("--warmup-epochs",), dict(type=float, default=1.0, help="epochs to reach the scaled rate")),
    (("--loss",), dict(choices=LOSSES, default="auto")),
    (("--compression",), dict(choices=["none", "fp16"], default="none",
                              help="compress what ranks exchange (pays across a real network; on "
                                   "one host's loopback fp16 made the exchange slower)")),
    (("--gate",), dict(default=DEFAULT_GATE, metavar="METRIC:MIN_DELTA",
                       help="promotion rule, e.g. loss:+0.0 (default) or accuracy:+0.01")),
    (("--seed",), dict(type=int, default=0)),
    (("--elastic",), dict(action="store_true", help="run under hvd.elastic")),
    (("--commit-every",), dict(type=int, default=20, metavar="N",
                               help="commit elastic state every N batches")),
    (("--checkpoint-dir",), dict(help="default: <repo>/<model>/.checkpoints")),
    (("--resume",), dict(action="store_true", help="continue from the last checkpoint")),
    (("--intra-op-threads",), dict(type=int, help="TensorFlow threads per rank (default: cores / ranks "
                                                  "on this host)")),
    (("--cycle-time-ms",), dict(type=float, default=DEFAULT_CYCLE_TIME_MS, metavar="MS",
                                help="Horovod's cycle time: how often its thread looks for tensors to "
                                     "exchange")),
    (("--fusion-threshold-mb",), dict(type=int, default=DEFAULT_FUSION_THRESHOLD_MB, metavar="MB",
                                      help="Horovod's fusion buffer: tensors fused into one allreduce")),
    (("--report-dir",), dict(help="where every job writes metrics.json and curve.png, published or not "
                                  "(default: <repo>/<model>/.training)")),
    (("--result-file",), dict(help="rank 0 writes the outcome here as JSON")),
]


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    for flags, kwargs in JOB_OPTIONS:
        parser.add_argument(*flags, **kwargs)


def to_argv(args: argparse.Namespace) -> list[str]:
    """The job flags that reproduce ``args`` (defaults omitted)."""
    argv: list[str] = []
    for flags, kwargs in JOB_OPTIONS:
        dest = flags[0].lstrip("-").replace("-", "_")
        value = getattr(args, dest, None)
        if value is None or value is False or value == kwargs.get("default"):
            continue
        if kwargs.get("action") == "store_true":
            argv.append(flags[0])
        elif isinstance(value, list):
            argv += [flags[0], ",".join(value)] if dest == "features" else [flags[0], *value]
        else:
            argv += [flags[0], str(value)]
    return argv


def validate(args: argparse.Namespace) -> None:
    """Checks that need no data or TensorFlow, done by the launcher before any rank starts."""
    from .errors import DataError
    from .gate import Gate

    for name in ("epochs", "batch_size", "average_every", "commit_every"):
        if getattr(args, name) < 1:
            raise DataError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.max_rows < 0 or not 0.0 <= args.replay_fraction < 1.0:
        raise DataError(f"--max-rows must be >= 0 and --replay-fraction in [0, 1), got {args.max_rows} "
                        f"and {args.replay_fraction}")
    if args.lr <= 0:
        raise DataError(f"--lr must be > 0, got {args.lr}")
    if args.cycle_time_ms <= 0 or args.fusion_threshold_mb < 0:
        raise DataError(f"--cycle-time-ms must be > 0 and --fusion-threshold-mb >= 0, got "
                        f"{args.cycle_time_ms} and {args.fusion_threshold_mb}")
    Gate.parse(args.gate)
