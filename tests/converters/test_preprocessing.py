"""Keras preprocessing layers through the converter (issue 25): each configuration of the
table in docs/preprocessing-layers.md converts with parity, or is refused in one line before
any work. ``python -m tests.converters.test_preprocessing`` prints the table, measured.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import pytest

from converters import UnsupportedLayerError, publish_file, publish_keras_model
from converters.pipeline import Options
from model_repo import Repository

from . import preprocessing_models as pm

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _adapted(layer, data):
    layer.adapt(data)
    return layer


def _one_layer(layer, shape, dtype):
    import keras

    x = keras.Input(shape, dtype=dtype, name="x")
    return keras.Model(x, layer(x))


def _shout(texts):
    import tensorflow as tf

    return tf.strings.upper(texts)


def _text(**options):
    import keras

    return _one_layer(_adapted(keras.layers.TextVectorization(max_tokens=40, **options), pm.CORPUS), (1,), "string")


def _lookup(kind: str, shape=(1,), **options):
    import keras

    if kind == "string":
        return _one_layer(_adapted(keras.layers.StringLookup(**options), pm.COLORS),
                          shape, "int64" if options.get("invert") else "string")
    return _one_layer(_adapted(keras.layers.IntegerLookup(**options), np.array(pm.SIZES)), shape, "int64")


def _numeric(name: str, shape, **options):
    import keras

    layer = getattr(keras.layers, name)(**options)
    if name == "Normalization" and "mean" not in options:
        layer.adapt(np.random.default_rng(0).normal(3, 2, (50,) + shape).astype("float32"))
    return _one_layer(layer, shape, "float32")


def _categories(mode: str, width: int):
    import keras

    return _one_layer(keras.layers.CategoryEncoding(num_tokens=6, output_mode=mode), (width,), "int64")


def _hashing(dtype: str, **options):
    import keras

    return _one_layer(keras.layers.Hashing(num_bins=8, **options), (1,), dtype)


# (layer and configuration, builder, converts?) -- the rows of docs/preprocessing-layers.md.
CASES = [
    ("TextVectorization lower_and_strip_punctuation, whitespace, int, output_sequence_length=8",
     lambda: _text(output_sequence_length=8), True),
    ("TextVectorization int, no output_sequence_length", lambda: _text(), True),
    ("TextVectorization standardize=lower", lambda: _text(standardize="lower", output_sequence_length=8), True),
    ("TextVectorization standardize=None", lambda: _text(standardize=None, output_sequence_length=8), True),
    ("TextVectorization split=character", lambda: _text(split="character", output_sequence_length=16), True),
    ("TextVectorization split=None", lambda: _text(split=None, output_sequence_length=1), True),
    ("TextVectorization output_mode=multi_hot", lambda: _text(output_mode="multi_hot"), True),
    ("TextVectorization output_mode=count", lambda: _text(output_mode="count"), True),
    ("TextVectorization output_mode=tf_idf", lambda: _text(output_mode="tf_idf"), True),
    ("TextVectorization ngrams=2", lambda: _text(ngrams=2, output_sequence_length=8), False),
    ("TextVectorization standardize=<a Python function>", lambda: _text(standardize=_shout, output_sequence_length=8),
     False),
    ("StringLookup int", lambda: _lookup("string"), True),
    ("StringLookup one_hot", lambda: _lookup("string", output_mode="one_hot"), True),
    ("StringLookup multi_hot (3 values a row)", lambda: _lookup("string", (3,), output_mode="multi_hot"), True),
    ("StringLookup invert=True (ids -> strings)", lambda: _lookup("string", invert=True), True),
    ("StringLookup num_oov_indices=2", lambda: _lookup("string", num_oov_indices=2), False),
    ("IntegerLookup int", lambda: _lookup("int"), True),
    ("IntegerLookup one_hot", lambda: _lookup("int", output_mode="one_hot"), True),
    ("IntegerLookup invert=True", lambda: _lookup("int", invert=True), True),
    ("IntegerLookup num_oov_indices=2", lambda: _lookup("int", num_oov_indices=2), False),
    ("Hashing strings, num_bins=8", lambda: _hashing("string"), False),
    ("Hashing integers, num_bins=8", lambda: _hashing("int64"), False),
    ("Hashing salt=[1, 2]", lambda: _hashing("string", salt=[1, 2]), False),
    ("CategoryEncoding one_hot", lambda: _categories("one_hot", 1), True),
    ("CategoryEncoding multi_hot", lambda: _categories("multi_hot", 3), True),
    ("CategoryEncoding count", lambda: _categories("count", 3), True),
    ("Normalization (adapted)", lambda: _numeric("Normalization", (4,)), True),
    ("Normalization invert=True", lambda: _numeric("Normalization", (4,), mean=2.0, variance=4.0, invert=True), True),
    ("Discretization bin_boundaries=[-1, 0, 1]", lambda: _numeric("Discretization", (4,), bin_boundaries=[-1.0, 0.0, 1.0]),
     True),
    ("Rescaling 1/255, offset -0.5", lambda: _numeric("Rescaling", (8, 8, 3), scale=1 / 255, offset=-0.5), True),
    ("Resizing 6x6 bilinear", lambda: _numeric("Resizing", (10, 10, 3), height=6, width=6), True),
    ("Resizing 6x6 nearest", lambda: _numeric("Resizing", (10, 10, 3), height=6, width=6, interpolation="nearest"),
     True),
    ("CenterCrop 6x6", lambda: _numeric("CenterCrop", (10, 10, 3), height=6, width=6), True),
]


@pytest.fixture
def repo(tmp_path) -> Repository:
    return Repository(tmp_path / "repo")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_layer_converts_with_parity_or_is_refused(case, repo):
    _, build, converts = case
    if converts:
        manifest = publish_keras_model(build(), repo, "layer")
        parity = manifest.parity
        assert parity["passed"] and len(parity["batches"]) >= 2
        for name, entry in parity["outputs"].items():
            assert entry["varies"], f"{name}: every parity input got the same answer, which proves little"
    else:
        with pytest.raises(UnsupportedLayerError) as info:
            publish_keras_model(build(), repo, "layer")
        text = str(info.value)
        assert text.startswith("load: cannot convert ") and "move the layer out of the model" in text
        assert info.value.exit_code == 4 and "\n" not in text


def test_integer_outputs_must_match_exactly(repo):
    """Token ids have no tolerance: the report's max |Δ| is 0 and exactness is what passed."""
    manifest = publish_keras_model(_text(output_sequence_length=8), repo, "ids", atol=10.0, rtol=1.0)
    assert manifest.parity["max_abs"] == 0.0 and manifest.parity["inputs"] == "generated"


def test_parity_data_from_a_text_file(repo, tmp_path):
    texts = tmp_path / "texts.txt"
    lines = [t.replace("\n", " ") for t in pm.TEXTS]  # one text a line: a text holds no newline
    texts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    model_file = tmp_path / "sentiment.keras"
    pm.sentiment().save(model_file)
    manifest = publish_file(model_file, repo, "sentiment", options=Options(sample=texts))
    assert manifest.parity["passed"] and manifest.parity["batches"] == [1, len(lines)]
    assert manifest.parity["inputs"] == "sample texts.txt"


def test_a_saved_model_with_a_string_signature(repo, tmp_path):
    """TensorFlow SavedModels that take tf.string (here Keras' own export of the sentiment
    model) convert through the same string ops."""
    model = pm.sentiment()
    model.export(str(tmp_path / "exported"), verbose=False)
    manifest = publish_file(tmp_path / "exported", repo, "exported")
    assert manifest.parity["passed"] and manifest.extra["custom_ops"] == ["onnxruntime_extensions"]


def measure() -> list[tuple[str, str, str, str]]:
    """(layer and configuration, status, parity max |Δ|, onnxruntime-extensions) per case."""
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for i, (label, build, _) in enumerate(CASES):
            repo = Repository(os.path.join(root, str(i)))
            try:
                manifest = publish_keras_model(build(), repo, "layer")
            except UnsupportedLayerError as exc:
                rows.append((label, "refused (exit 4)", "-", "-", str(exc).split(": ", 3)[-1]))
                continue
            uses = "yes" if manifest.extra.get("custom_ops") else "no"
            rows.append((label, "converted", f"{manifest.parity['max_abs']:.1e}", uses, ""))
    return rows


if __name__ == "__main__":
    start = time.perf_counter()
    print("| layer and configuration | status | parity max abs diff | onnxruntime-extensions | why refused |")
    print("|---|---|---|---|---|")
    for row in measure():
        print("| " + " | ".join(row) + " |")
    print(f"\n({time.perf_counter() - start:.0f} s)")
