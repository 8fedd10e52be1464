"""Trainer benchmark, in one run (ratios side by side; never a test):

1. training steps/s of the digits MLP at np=1 and np=2, one intra-op thread per rank
   (allreduce mode: one grouped allreduce per step), and their ratio;
2. Horovod allreduce bus bandwidth for 1, 16 and 64 MB float32 tensors at np=2
   (busbw = size / time × 2(n-1)/n, NCCL's convention), beside a single-process numpy copy
   of the same size.

Usage: python bench/train.py   (it starts horovodrun itself; workers run with --worker)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES_MB = (1, 16, 64)


def _worker_steps(steps: int) -> dict:
    import horovod.tensorflow as hvd
    import numpy as np

    hvd.init()
    from trainer.distributed import configure_threads

    configure_threads(hvd, 1)
    import keras
    from sklearn.datasets import load_digits

    from converters.examples import digits_mlp
    from trainer.objective import choose_objective
    from trainer.step import make_train_step

    d = load_digits()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    model = digits_mlp()
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, choose_objective(model, y), hvd, allreduce=hvd.size() > 1,
                           compression=hvd.Compression.none)
    batch = 32
    xb, yb = x[:batch], y[:batch]
    for _ in range(20):
        step(xb, yb)
    hvd.allreduce(np.zeros(1, np.float32))  # start together
    started = time.perf_counter()
    for _ in range(steps):
        step(xb, yb)
    float(step(xb, yb)[0])
    return {"kind": "steps", "np": hvd.size(), "rank": hvd.rank(),
            "steps_per_s": (steps + 1) / (time.perf_counter() - started)}


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


def _horovodrun(np_: int, *worker_args: str) -> list[dict]:
    cmd = [str(Path(sys.executable).parent / "horovodrun"), "-np", str(np_), "-H", f"localhost:{np_}", "--gloo",
           sys.executable, str(Path(__file__).resolve()), "--worker", *worker_args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return [json.loads(line.split("BENCH ", 1)[1]) for line in out.stdout.splitlines() if "BENCH " in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["steps", "allreduce"])
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    if args.worker == "steps":
        print("BENCH " + json.dumps(_worker_steps(args.steps)), flush=True)
        return
    if args.worker == "allreduce":
        import horovod.tensorflow as hvd

        rows = _worker_allreduce()
        if hvd.rank() == 0:
            for row in rows:
                print("BENCH " + json.dumps(row), flush=True)
        return

    one = _horovodrun(1, "steps", "--steps", str(args.steps))
    two = _horovodrun(2, "steps", "--steps", str(args.steps))
    rate1 = one[0]["steps_per_s"]
    rate2 = min(r["steps_per_s"] for r in two)  # the job runs at its slowest rank
    print(f"{'digits MLP, batch 32/rank, 1 intra-op thread/rank':52s} {'steps/s':>10s} {'examples/s':>11s}")
    print(f"{'np=1':52s} {rate1:10.1f} {rate1 * 32:11.0f}")
    print(f"{'np=2 (grouped allreduce every step)':52s} {rate2:10.1f} {rate2 * 64:11.0f}")
    print(f"{'ratio np=2/np=1: steps/s':52s} {rate2 / rate1:10.2f}   examples/s {2 * rate2 / rate1:.2f}")
    print()
    print(f"{'size':>6s} {'allreduce np=2 ms':>18s} {'busbw GB/s':>11s} {'numpy copy ms':>14s} {'copy GB/s':>10s}")
    for row in _horovodrun(2, "allreduce"):
        print(f"{row['mb']:>4d}MB {row['ms']:18.2f} {row['busbw_gbs']:11.2f} {row['copy_ms']:14.2f} "
              f"{row['copy_gbs']:10.2f}")


if __name__ == "__main__":
    main()
