"""Make the example files that README's convert and fine-tune sections use. Nothing is
downloaded.

- ``basic_mlp.h5``: the DL4J chapter's MLP (100 -> Dense(64, relu) -> Dense(10, softmax),
  random weights), saved in Keras's legacy HDF5 format, for ``tunegate convert``.
- ``more.npz``: extra labelled digits for ``tunegate finetune`` on the demo's ``digits``
  model: arrays ``x`` (float32, one row of 64 pixels scaled to 0..1 per example, as the demo
  model takes them) and ``y`` (int64 class 0..9). They are scikit-learn's bundled
  ``load_digits`` training digits (the demo model's training split), each also turned a
  quarter turn, so fine-tuning has something new to learn.

    .venv/bin/python packaging/make_examples.py --out demo
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parent.parent

MLP_FILE = "basic_mlp.h5"
DATA_FILE = "more.npz"


def make_mlp(path: Path, seed: int = 0) -> Path:
    import keras

    from converters.examples import basic_mlp

    keras.utils.set_random_seed(seed)
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # the "HDF5 is legacy" warning: the legacy format is the point
    try:
        basic_mlp().save(path)
    finally:
        absl.setLevel(level)
    return path


def make_data(path: Path, seed: int = 0) -> Path:
    import numpy as np

    sys.path.insert(0, str(PROJECT_ROOT / "packaging"))
    from example_repo import digits_split  # the demo model's scaling and training split

    x_train, _, y_train, _ = digits_split(seed)
    turned = np.rot90(x_train.reshape(-1, 8, 8), 1, axes=(1, 2)).reshape(-1, 64)
    x = np.concatenate([x_train, turned]).astype(np.float32)
    y = np.concatenate([y_train, y_train]).astype(np.int64)
    np.savez(path, x=x, y=y)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo", help="directory to write them in (default: demo)")
    parser.add_argument("--seed", type=int, default=0, help="for the MLP's random weights (default: 0)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = make_data(out / DATA_FILE, args.seed)
    mlp = make_mlp(out / MLP_FILE, args.seed)
    print(f"wrote {mlp} (Keras MLP, legacy HDF5) and {data} (arrays x and y)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
