"""Build the example model repository for `make demo`: a small Keras classifier trained
on scikit-learn's bundled ``load_digits`` (no download), converted and published as the
model ``digits``. Idempotent: an existing ``digits`` model is left as it is."""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def digits_split(seed: int = 0):
    """``load_digits`` scaled to 0..1 and split 3:1: (x_train, x_test, y_train, y_test). The
    held-out quarter is never trained on (loop_demo.py measures on it)."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    return train_test_split(x, digits.target, test_size=0.25, random_state=seed)


def build_and_train(seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    x_train, x_test, y_train, y_test = digits_split(seed)
    inputs = keras.Input(shape=(64,), name="pixels")
    hidden = keras.layers.Dense(64, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax", name="probabilities")(hidden)
    model = keras.Model(inputs, outputs, name="digits")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=30, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    return model, float(accuracy), x_train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True, help="model repository directory to create or reuse")
    parser.add_argument("--name", default="digits")
    args = parser.parse_args(argv)

    from model_repo import Repository

    repo = Repository(args.repo)
    if repo.root.is_dir() and repo.has_model(args.name) and repo.list_versions(args.name):
        print(f"{args.name} already in {repo.root} (versions {repo.list_versions(args.name)}); left as it is")
        return 0
    from converters import publish_keras_model
    from model_repo.drift import summarise

    model, accuracy, x_train = build_and_train()
    # The training inputs' summary is the drift reference: rotated digits stand out against it.
    manifest = publish_keras_model(
        model, repo, args.name, manifest_fields={"metrics": {"test_accuracy": accuracy}, "dataset": "sklearn load_digits",
                                                 "input_summary": summarise(x_train).to_dict()}
    )
    print(f"published {args.name} version {manifest.version} (test accuracy {accuracy:.3f}) in {repo.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
