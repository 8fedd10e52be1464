"""A corpus of real source models on disk, built once per session (TensorFlow is slow to
start and these tests share two cores)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CUSTOM_LAYER_MODULE = '''
import keras


class Scale(keras.layers.Layer):
    """A layer Keras does not know: the file can only be loaded with --custom-objects."""

    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
'''


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Every source format of issue 2 §4, as files."""
    import sys

    import tensorflow as tf

    from converters import examples

    root = tmp_path_factory.mktemp("corpus")
    files: dict[str, Path] = {}

    mlp = examples.basic_mlp()
    files["mlp_h5"] = root / "basic_mlp.h5"
    mlp.save(files["mlp_h5"])
    files["sequential_keras"] = root / "digits_cnn.keras"
    examples.digits_cnn().save(files["sequential_keras"])
    files["two_in_two_out"] = root / "two_in_two_out.keras"
    examples.two_in_two_out().save(files["two_in_two_out"])
    files["conv_bn_cnn"] = root / "conv_bn_cnn.keras"
    examples.conv_bn_cnn(input_size=24).save(files["conv_bn_cnn"])
    files["text_lstm"] = root / "text_lstm.keras"
    examples.text_classifier(rnn="lstm").save(files["text_lstm"])
    files["text_gru"] = root / "text_gru.h5"
    examples.text_classifier(rnn="gru", length=12).save(files["text_gru"])
    files["mobilenet_v2"] = root / "mobilenet_v2.keras"
    examples.mobilenet_v2(input_size=32).save(files["mobilenet_v2"])

    files["saved_model"] = root / "affine_saved_model"
    # Lgamma has no tf2onnx handler: a signature the converter must refuse, naming the op.
    exotic = tf.function(lambda x: {"y": tf.math.lgamma(tf.abs(x) + 1.0)},
                         input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    examples.save_affine_saved_model(files["saved_model"], extra_signatures={"exotic": exotic})
    files["graphdef"] = root / "frozen.pb"
    files["graphdef"].write_bytes(examples.frozen_graphdef().SerializeToString())
    files["graphdef_two_outputs"] = root / "frozen_two.pb"
    files["graphdef_two_outputs"].write_bytes(examples.frozen_graphdef(two_outputs=True).SerializeToString())

    # A model with a custom layer from an importable module, saved while the module is known.
    layers_dir = root / "custom"
    layers_dir.mkdir()
    (layers_dir / "tunegate_test_layers.py").write_text(CUSTOM_LAYER_MODULE)
    sys.path.insert(0, str(layers_dir))
    try:
        import keras
        import tunegate_test_layers

        inputs = keras.Input(shape=(5,), name="x")
        outputs = keras.layers.Dense(2, name="y")(tunegate_test_layers.Scale(3.0, name="scale")(inputs))
        keras.Model(inputs, outputs).save(root / "custom.keras")
    finally:
        sys.path.remove(str(layers_dir))
        sys.modules.pop("tunegate_test_layers", None)
    files["custom"] = root / "custom.keras"
    files["custom_dir"] = layers_dir

    files["corrupt_h5"] = root / "corrupt.h5"
    files["corrupt_h5"].write_bytes(files["mlp_h5"].read_bytes()[:4000])
    files["not_a_model"] = root / "notes.txt"
    files["not_a_model"].write_text("hello")
    return files
