"""Conversion time and parity for the converter corpus, printed as a table.

    .venv/bin/python bench/convert.py [--repeat N] [--mobilenet-size 96]

Each model is saved in its source format, then converted with ``converters.publish_file``
into a throwaway repository (load, export, tf2onnx, checks, parity at batch 1 and 8).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def build_corpus(root: Path, mobilenet_size: int) -> list[tuple[str, Path, dict]]:
    from converters import examples

    corpus = []

    def keras_file(name, model, suffix=".keras"):
        path = root / f"model{len(corpus)}{suffix}"
        model.save(path)
        corpus.append((name, path, {}))

    keras_file("chapter MLP (.h5)", examples.basic_mlp(), ".h5")
    keras_file("digits CNN (Sequential)", examples.digits_cnn())
    keras_file("two-in/two-out (GELU)", examples.two_in_two_out())
    keras_file("Conv+BN+Dropout CNN", examples.conv_bn_cnn())
    keras_file("Embedding+LSTM", examples.text_classifier(rnn="lstm"))
    keras_file("Embedding+GRU (.h5)", examples.text_classifier(rnn="gru"), ".h5")
    keras_file(f"MobileNetV2 {mobilenet_size}px", examples.mobilenet_v2(input_size=mobilenet_size))
    saved = root / "affine_saved_model"
    examples.save_affine_saved_model(saved)
    corpus.append(("tf.Module SavedModel", saved, {}))
    graphdef = root / "frozen.pb"
    graphdef.write_bytes(examples.frozen_graphdef().SerializeToString())
    corpus.append(("frozen GraphDef", graphdef, {}))
    return corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="conversions per model (median reported)")
    parser.add_argument("--mobilenet-size", type=int, default=96)
    args = parser.parse_args(argv)
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from converters import publish_file
    from model_repo import Repository

    with tempfile.TemporaryDirectory(prefix="tunegate-bench-") as tmp:
        root = Path(tmp)
        corpus = build_corpus(root, args.mobilenet_size)
        repo = Repository(root / "repo")
        rows = []
        for index, (label, path, kwargs) in enumerate(corpus):
            seconds = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                manifest = publish_file(path, repo, f"m{index}", **kwargs)
                seconds.append(time.perf_counter() - start)
            onnx_mb = (repo.version_dir(f"m{index}", manifest.version) / "model.onnx").stat().st_size / 1e6
            params = manifest.extra["converter"]["params"]
            rows.append((label, params, onnx_mb, statistics.median(seconds), manifest.parity["max_abs"],
                         manifest.parity["max_rel"]))

    header = ("model", "params", "onnx MB", "convert s", "max |Δ|", "max rel")
    print(f"{header[0]:<26} {header[1]:>9} {header[2]:>8} {header[3]:>10} {header[4]:>10} {header[5]:>10}")
    for label, params, mb, secs, abs_err, rel_err in rows:
        print(f"{label:<26} {params:>9,} {mb:>8.2f} {secs:>10.2f} {abs_err:>10.2e} {rel_err:>10.2e}")
    print(f"\nmedian of {args.repeat} conversions each (first includes TF tracing warm-up); "
          "parity at batch 1 and 8 on generated inputs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
