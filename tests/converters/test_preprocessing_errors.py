"""The converter never crashes: deliberately unsupported models end in one documented error
naming the stage and the cause, and publish nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converters import ConversionError, UnsupportedOpError, publish_file, publish_keras_model
from converters.errors import STAGES
from model_repo import Repository

TUNEGATE = Path(sys.executable).with_name("tunegate")
CORPUS = ["The movie was great!", "Terrible, boring film.", "I loved it; truly wonderful."]


def _text_model(**options):
    import keras

    layer = keras.layers.TextVectorization(max_tokens=30, **options)
    layer.adapt(CORPUS)
    text = keras.Input((1,), dtype="string", name="text")
    return keras.Model(text, layer(text))


def _fails_at_batch_8():
    """Runs at batch 1, raises at batch 8: the reference run (parity stage) fails."""
    import keras
    import tensorflow as tf

    class Picky(keras.layers.Layer):
        def call(self, x):
            tf.debugging.assert_less(tf.shape(x)[0], 8, message="batches of 8 are not welcome")
            return x * 2.0

    x = keras.Input((3,), name="x")
    return keras.Model(x, Picky()(x))


def _eager_only():
    """Answers eagerly, but its call reads a tensor's value, which tracing for export cannot."""
    import keras

    class EagerOnly(keras.layers.Layer):
        def compute_output_spec(self, x):
            return keras.KerasTensor(x.shape, x.dtype)

        def call(self, x):
            return x + float(np.asarray(x).mean())

    x = keras.Input((3,), name="x")
    return keras.Model(x, EagerOnly()(x))


@pytest.fixture(scope="module")
def unsupported(tmp_path_factory) -> dict[str, Path]:
    import tensorflow as tf

    root = tmp_path_factory.mktemp("unsupported")
    files = {"ngrams": root / "ngrams.keras"}
    _text_model(ngrams=2, output_sequence_length=4).save(files["ngrams"])
    files["substr"] = root / "substr_saved_model"
    module = tf.Module()
    module.f = tf.function(lambda s: {"head": tf.strings.length(tf.strings.substr(s, 0, 3))},
                           input_signature=[tf.TensorSpec([None], tf.string, name="s")])
    tf.saved_model.save(module, str(files["substr"]), signatures={"serving_default": module.f})
    return files


@pytest.fixture
def repo(tmp_path) -> Repository:
    return Repository(tmp_path / "repo")


def _nothing_published(repo: Repository, name: str) -> None:
    model_dir = repo.root / name
    assert not model_dir.exists() or not [p for p in model_dir.iterdir() if not p.name.startswith(".")]


def _one_line(exc: ConversionError, stage: str) -> str:
    text = str(exc)
    assert exc.stage == stage and stage in STAGES
    assert "\n" not in text and text.startswith(f"{stage}: ")
    return text


def test_an_unconvertible_text_layer_is_named(unsupported, repo):
    with pytest.raises(UnsupportedOpError) as info:
        publish_file(unsupported["ngrams"], repo, "ngrams")
    text = _one_line(info.value, info.value.stage)
    assert info.value.exit_code == 4 and ("ngrams" in text or "StringNGrams" in text)
    _nothing_published(repo, "ngrams")


def test_a_string_saved_model_with_an_unknown_op(unsupported, repo):
    with pytest.raises(UnsupportedOpError) as info:
        publish_file(unsupported["substr"], repo, "substr")
    assert "Substr" in _one_line(info.value, "convert")
    _nothing_published(repo, "substr")


def test_an_exception_in_the_reference_run_names_the_parity_stage(repo):
    with pytest.raises(ConversionError) as info:
        publish_keras_model(_fails_at_batch_8(), repo, "picky")
    text = _one_line(info.value, "parity")
    assert info.value.exit_code == 1 and "batches of 8 are not welcome" in text
    _nothing_published(repo, "picky")


def test_an_exception_while_tracing_names_the_trace_stage(repo):
    with pytest.raises(ConversionError) as info:
        publish_keras_model(_eager_only(), repo, "eager")
    _one_line(info.value, "trace")
    _nothing_published(repo, "eager")


def test_the_cli_exits_with_the_documented_code_and_one_line(unsupported, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([str(TUNEGATE), "convert", str(unsupported["ngrams"]), "--repo", str(tmp_path / "r"),
                             "--name", "ngrams", "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 4, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("tunegate convert: error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert errors[0].split(": ")[2] in STAGES
