"""Proves the Horovod build: two ranks under real ``horovodrun --gloo`` allreduce a tensor."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


HOROVODRUN = Path(sys.executable).parent / "horovodrun"

SCRIPT = textwrap.dedent("""
    import tensorflow as tf
    import horovod.tensorflow as hvd
    hvd.init()
    tensor = tf.fill([1000], float(hvd.rank() + 1))
    total = hvd.allreduce(tensor, op=hvd.Sum)
    average = hvd.allreduce(tensor, op=hvd.Average)
    print(f"RESULT rank={hvd.rank()} size={hvd.size()} "
          f"sum={float(tf.reduce_min(total))},{float(tf.reduce_max(total))} "
          f"avg={float(tf.reduce_max(average))}", flush=True)
""")


def test_two_gloo_ranks_allreduce_the_right_sum(tmp_path):
    assert HOROVODRUN.exists(), f"{HOROVODRUN} is missing: packaging/setup.sh builds and installs Horovod"
    script = tmp_path / "allreduce.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [str(HOROVODRUN), "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, str(script)],
        capture_output=True, text=True, env=env, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = sorted(line.split("RESULT ", 1)[1] for line in proc.stdout.splitlines() if "RESULT " in line)
    assert lines == [
        "rank=0 size=2 sum=3.0,3.0 avg=1.5",
        "rank=1 size=2 sum=3.0,3.0 avg=1.5",
    ], proc.stdout
