"""Trainer benchmark, in one run (ratios side by side; never a test):

1. the trainer's own epoch loop (``trainer.loop.train``: the step, the averaging, the
   epoch-end sync of batch-norm state) on a compute-bound batch-norm CNN (32×32×3, four
   conv layers with BatchNormalization) and on the digits MLP, in these configurations:
   np=1 with every core, np=1 with one thread, np=2 with one thread each (allreduce, with and
   without fp16, at Horovod's 1 ms cycle and at the trainer's default), and average mode K=5.
   Each row gives the job's samples/s (slowest rank × ranks, the run's first, tracing step
   left out), its ratio to np=1 at every core, the final held-out loss (same data and seed),
   whether the ranks' checksums agree, and from Horovod's timeline the median ms of one
   tensor's negotiation (waiting for the other rank) and of its allreduce (the exchange);
2. Horovod allreduce bus bandwidth for 1, 16 and 64 MB float32 tensors at np=2
   (busbw = size / time × 2(n-1)/n, NCCL's convention), beside a numpy copy of the same size.

Usage: python bench/train.py [--models cnn,mlp] [--samples N] [--epochs E]
(it starts horovodrun itself; workers run with --worker).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES_MB = (1, 16, 64)
BATCH = 32


def bn_cnn():
    """A compute-bound classifier with batch-norm state: 4 conv layers, 329k parameters."""
    import keras

    inputs = keras.Input((32, 32, 3), name="x")
    h = inputs
    for i, filters in enumerate((32, 32, 64, 64)):
        h = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(h)
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.Activation("relu")(h)
        if i % 2:
            h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(h))
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))


def _dataset(model: str, samples: int):
    """Digits for the MLP; for the CNN random images labelled by a fixed linear rule (learnable)."""
    import numpy as np

    from trainer.data import Dataset

    if model == "mlp":
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y = d.data.astype(np.float32)[:samples], d.target.astype(np.int64)[:samples]
    else:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((samples, 32, 32, 3)).astype(np.float32)
        y = np.argmax(x.reshape(samples, -1) @ rng.standard_normal((32 * 32 * 3, 10)), axis=1).astype(np.int64)
    return Dataset(x, y, [])


def _worker_train(cfg: dict) -> dict | None:
    from trainer.distributed import configure_horovod

    configure_horovod(cfg["cycle_ms"], None)
    import horovod.tensorflow as hvd

    hvd.init()
    from trainer.distributed import configure_threads

    configure_threads(hvd, cfg["threads"])
    import keras

    from converters.examples import digits_mlp
    from trainer.data import split_validation
    from trainer.errors import JobFailed
    from trainer.loop import LoopConfig, PlainState, train
    from trainer.objective import choose_objective
    from trainer.sync import check_consistency

    keras.utils.set_random_seed(0)
    train_data, val_data = split_validation(_dataset(cfg["model"], cfg["samples"]), 0.1, 0)
    model = bn_cnn() if cfg["model"] == "cnn" else digits_mlp()
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    config = LoopConfig(epochs=cfg["epochs"], batch_size=BATCH, lr=1e-3, warmup_epochs=0.5, mode=cfg["mode"],
                        average_every=5, average_optimizer_state=False, seed=0, commit_every=1, elastic=False)
    state = PlainState()
    train(hvd, state, model=model, optimizer=optimizer, objective=choose_objective(model, train_data.y),
          train_data=train_data, val_data=val_data, config=config,
          compression=hvd.Compression.fp16 if cfg["fp16"] else hvd.Compression.none,
          on_epoch_end=lambda *_: None)
    try:
        check_consistency(hvd, model)
        agree = True
    except JobFailed:
        agree = False
    if hvd.rank() != 0:
        return None
    last = state.history[-1]
    return {"samples_per_s": last["samples_per_s"], "val_loss": last["val_loss"], "agree": agree}


def _worker_allreduce() -> list[dict]:
    import horovod.tensorflow as hvd
    import numpy as np

    hvd.init()
    from trainer.distributed import configure_threads

    configure_threads(hvd, 1)
    import tensorflow as tf

    n = hvd.size()
    rows = []
    for mb in SIZES_MB:
        elements = mb * (1 << 20) // 4
        tensor = tf.ones([elements], tf.float32)
        iterations = max(3, 64 // mb)
        for _ in range(2):
            hvd.allreduce(tensor, op=hvd.Sum).numpy()
        started = time.perf_counter()
        for _ in range(iterations):
            hvd.allreduce(tensor, op=hvd.Sum).numpy()
        seconds = (time.perf_counter() - started) / iterations
        size = elements * 4
        src, dst = np.ones(elements, np.float32), np.empty(elements, np.float32)
        np.copyto(dst, src)
        started = time.perf_counter()
        for _ in range(iterations):
            np.copyto(dst, src)
        copy_seconds = (time.perf_counter() - started) / iterations
        rows.append({"kind": "allreduce", "mb": mb, "np": n, "ms": seconds * 1e3,
                     "busbw_gbs": size / seconds * 2 * (n - 1) / n / 1e9,
                     "copy_ms": copy_seconds * 1e3, "copy_gbs": size / copy_seconds / 1e9})
    return rows


def _horovodrun(np_: int, worker_args: list[str], extra_env: dict | None = None) -> list[dict]:
    cmd = [str(Path(sys.executable).parent / "horovodrun"), "-np", str(np_), "-H", f"localhost:{np_}", "--gloo",
           sys.executable, str(Path(__file__).resolve()), "--worker", *worker_args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(extra_env or {}),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return [json.loads(line.split("BENCH ", 1)[1]) for line in out.stdout.splitlines() if "BENCH " in line]


def configurations(cores: int, default_cycle_ms: float) -> list[tuple[str, int, dict]]:
    """(label, np, worker settings); the first row is the reference every ratio divides by."""
    one = dict(mode="allreduce", fp16=False, cycle_ms=default_cycle_ms)
    return [
        (f"np=1, {cores} threads", 1, dict(one, threads=cores)),
        ("np=1, 1 thread", 1, dict(one, threads=1)),
        ("np=2, allreduce, 1 ms cycle (Horovod's)", 2, dict(one, threads=1, cycle_ms=1.0)),
        (f"np=2, allreduce, {default_cycle_ms:g} ms cycle", 2, dict(one, threads=1)),
        (f"np=2, allreduce fp16, {default_cycle_ms:g} ms", 2, dict(one, threads=1, fp16=True)),
        (f"np=2, average K=5, {default_cycle_ms:g} ms", 2, dict(one, threads=1, mode="average")),
    ]


def run_model(model: str, args: argparse.Namespace, cores: int) -> None:
    from trainer.distributed import DEFAULT_CYCLE_TIME_MS
    from trainer.timeline import collectives

    print(f"\n{model}: batch {BATCH}/rank, {args.samples} samples, {args.epochs} epochs; samples/s of the "
          "last epoch (the job's: slowest rank × ranks)")
    print(f"{'configuration':42s} {'samples/s':>10s} {'ratio':>6s} {'val loss':>9s} {'agree':>6s} "
          f"{'negotiate ms':>14s} {'allreduce ms':>14s}")
    reference = None
    for label, np_, cfg in configurations(cores, DEFAULT_CYCLE_TIME_MS):
        cfg = dict(cfg, model=model, samples=args.samples, epochs=args.epochs)
        with tempfile.TemporaryDirectory(prefix="tunegate-bench-") as tmp:
            timeline = Path(tmp) / "timeline.json"
            (row,) = _horovodrun(np_, ["train", "--config", json.dumps(cfg)], {"HOROVOD_TIMELINE": str(timeline)})
            ops = collectives(timeline) if timeline.is_file() else {}
        reference = reference or row["samples_per_s"]
        median = {k: ops.get(k, {"median_ms": 0.0})["median_ms"] for k in ("NEGOTIATE_ALLREDUCE", "ALLREDUCE")}
        print(f"{label:42s} {row['samples_per_s']:10.0f} {row['samples_per_s'] / reference:6.2f} "
              f"{row['val_loss']:9.4f} {str(row['agree']):>6s} {median['NEGOTIATE_ALLREDUCE']:14.2f} "
              f"{median['ALLREDUCE']:14.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["train", "allreduce"])
    parser.add_argument("--config", help="worker settings (JSON)")
    parser.add_argument("--models", default="cnn,mlp")
    parser.add_argument("--samples", type=int, default=4000, help="per model (the MLP has 1797 at most)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--no-bandwidth", action="store_true", help="skip the allreduce bandwidth table")
    args = parser.parse_args()
    if args.worker == "train":
        row = _worker_train(json.loads(args.config))
        if row:
            print("BENCH " + json.dumps(row), flush=True)
        return
    if args.worker == "allreduce":
        import horovod.tensorflow as hvd

        rows = _worker_allreduce()
        if hvd.rank() == 0:
            for row in rows:
                print("BENCH " + json.dumps(row), flush=True)
        return

    from trainer.distributed import usable_cores

    for model in args.models.split(","):
        run_model(model, args, usable_cores())
    if args.no_bandwidth:
        return
    print(f"\n{'size':>6s} {'allreduce np=2 ms':>18s} {'busbw GB/s':>11s} {'numpy copy ms':>14s} {'copy GB/s':>10s}")
    for row in _horovodrun(2, ["allreduce"]):
        print(f"{row['mb']:>4d}MB {row['ms']:18.2f} {row['busbw_gbs']:11.2f} {row['copy_ms']:14.2f} "
              f"{row['copy_gbs']:10.2f}")


if __name__ == "__main__":
    main()
