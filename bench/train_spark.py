"""The same fine-tune under horovodrun and under Spark local[N], side by side (never a test).

Each launcher runs ``tunegate finetune --json`` as a subprocess on a fresh copy of one
repository (the digits example model, version 1) with the same data and seed. Wall time is
split from the job's own output: *start-up* (launch until the first epoch's loop began:
Spark and its JVM, the tasks, TensorFlow and Horovod in every rank, loading model and data),
*training* (the epoch loops, from the summary's steps and steps/s) and *finish* (what
follows the last epoch: the gate, the ONNX conversion and the publish).

Usage: python bench/train_spark.py [--np 2] [--epochs 5] [--samples N]
(tiny check: --epochs 1 --samples 400)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def build(workdir: Path, samples: int) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT / "packaging"))
    import example_repo

    repo = workdir / "repo"
    subprocess.run([sys.executable, str(ROOT / "packaging" / "example_repo.py"), "--repo", str(repo)],
                   check=True, cwd=ROOT, capture_output=True)
    x, _, y, _ = example_repo.digits_split()
    data = workdir / "data.npz"
    np.savez(data, x=x[:samples], y=y[:samples])
    return repo, data


def run(launcher: str, repo: Path, data: Path, args) -> dict:
    cmd = [sys.executable, str(ROOT / "tunegate_cli.py"), "finetune", "--repo", str(repo), "--model", "digits",
           "--json", "--data", str(data), "--np", str(args.np), "--epochs", str(args.epochs), "--seed", "0",
           "--gate", "loss:-100"]  # timing, not quality: publish whatever the gate says
    cmd += (["--launcher", "spark", "--spark-master", f"local[{args.np}]", "--spark-conf", "spark.ui.enabled=false"]
            if launcher == "spark" else ["--hosts", f"localhost:{args.np}"])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.perf_counter()
    epoch_lines: list[float] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          cwd=ROOT) as proc:
        for line in proc.stderr:  # --json: progress on stderr, the outcome on stdout
            if re.search(r"epoch \d+/\d+ .*loss", line):  # rank 0's progress line, after each epoch
                epoch_lines.append(time.perf_counter() - started)
        outcome = json.loads(proc.stdout.read())
    wall = time.perf_counter() - started
    if outcome.get("status") != "published":
        raise SystemExit(f"{launcher}: {outcome}")
    history = outcome["summary"]["history"]
    loops = [h["steps"] / h["steps_per_s"] for h in history]
    first_began = epoch_lines[0] - loops[0]
    return {"launcher": launcher, "wall": wall, "startup": first_began, "training": sum(loops),
            "finish": wall - epoch_lines[-1], "after_loss": outcome["summary"]["after"]["loss"],
            "ranks_agree": len(set(outcome["summary"]["weights_checksums"])) == 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--np", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=1200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-train-spark-") as tmp:
        template, data = build(Path(tmp), args.samples)
        rows = []
        for launcher in ("horovodrun", "spark"):
            repo = Path(tmp) / launcher
            shutil.copytree(template, repo)
            rows.append(run(launcher, repo, data, args))
    print(f"np={args.np}, {args.epochs} epochs, {args.samples} samples; seconds")
    print(f"{'launcher':<12}{'wall':>8}{'start-up':>10}{'training':>10}{'finish':>8}{'held-out loss':>15}  ranks agree")
    for r in rows:
        print(f"{r['launcher']:<12}{r['wall']:>8.1f}{r['startup']:>10.1f}{r['training']:>10.1f}{r['finish']:>8.1f}"
              f"{r['after_loss']:>15.4f}  {r['ranks_agree']}")
    base, spark = rows
    print(f"spark / horovodrun: wall {spark['wall'] / base['wall']:.2f}x, start-up "
          f"{spark['startup'] / base['startup']:.2f}x, training {spark['training'] / base['training']:.2f}x")


if __name__ == "__main__":
    main()
