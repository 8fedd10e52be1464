"""packaging/make_examples.py makes the files README's convert and fine-tune sections name,
and they work there: the MLP converts and publishes, the data passes the fine-tune checks
and loads as the trainer reads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_example_files_convert_and_load(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    made = subprocess.run([sys.executable, str(ROOT / "packaging" / "make_examples.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "basic_mlp.h5").read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"  # legacy HDF5, as README says

    converted = subprocess.run([str(Path(sys.executable).with_name("tunegate")), "convert",
                                str(tmp_path / "basic_mlp.h5"), "--repo", str(tmp_path / "repo"), "--name", "mlp",
                                "--json", "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert converted.returncode == 0, converted.stderr
    assert json.loads(converted.stdout)["version"] == 1

    from trainer.data import load_data
    from trainer.preflight import check_data, npz_arrays

    assert set(npz_arrays(tmp_path / "more.npz")) == {"x", "y"}
    check_data([str(tmp_path / "more.npz")], model="digits", model_input=(64,))  # the demo model's input
    data = load_data([str(tmp_path / "more.npz")])
    assert data.x.shape[1:] == (64,) and 0.0 <= data.x.min() and data.x.max() <= 1.0
    assert data.y.dtype == np.int64 and set(np.unique(data.y)) == set(range(10))
