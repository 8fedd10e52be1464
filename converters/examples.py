"""Small example Keras models for tests, the demo and benches (weights random, nothing
downloaded). Each builder imports Keras when called."""

from __future__ import annotations


def calibrate_batchnorm(model, seed: int = 0, batch: int = 16):
    """Set every BatchNormalization's moving statistics to those of one batch of random
    inputs, as training would. With freshly initialised statistics a deep random network's
    activations vanish (MobileNetV2's outputs are all exactly 0.1), and a parity check on
    constant outputs proves nothing."""
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = [rng.standard_normal((batch,) + tuple(t.shape[1:])).astype("float32") for t in model.inputs]
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0  # moving statistics := this batch's statistics
    try:
        model(feeds if len(feeds) > 1 else feeds[0], training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return model


def basic_mlp():
    """The DL4J chapter's model: 100 -> Dense(64, relu) -> Dense(10, softmax).

    Keras 3 dropped the ``input_dim`` keyword, so the input is declared with ``keras.Input``;
    the two layers are the chapter's."""
    import keras

    return keras.Sequential([
        keras.Input(shape=(100,), name="features"),
        keras.layers.Dense(64, activation="relu", name="hidden"),
        keras.layers.Dense(10, activation="softmax", name="probabilities"),
    ], name="basic_mlp")


def digits_mlp():
    """For scikit-learn's ``load_digits``: 64 pixel values (0..16) -> 10 classes."""
    import keras

    return keras.Sequential([
        keras.Input(shape=(64,), name="pixels"),
        keras.layers.Rescaling(1 / 16),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dropout(0.1),
        keras.layers.Dense(10, activation="softmax", name="digit"),
    ], name="digits_mlp")


def digits_cnn():
    """For ``load_digits`` as 8x8x1 images."""
    import keras

    return keras.Sequential([
        keras.Input(shape=(8, 8, 1), name="image"),
        keras.layers.Rescaling(1 / 16),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax", name="digit"),
    ], name="digits_cnn")


def conv_bn_cnn(input_size: int = 32, classes: int = 10):
    """Conv2D + BatchNormalization + Dropout: inference must use the moving statistics."""
    import keras

    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    x = inputs
    for filters in (16, 32):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation("relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.3)(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="class_probs")(x)
    return calibrate_batchnorm(keras.Model(inputs, outputs, name="conv_bn_cnn"))


def two_in_two_out():
    """A Functional model with two named inputs and two named outputs (one with exact GELU,
    which traces to the Erfc op tf2onnx needs help with)."""
    import keras

    numbers = keras.Input(shape=(12,), name="numbers")
    extra = keras.Input(shape=(4,), name="extra")
    x = keras.layers.Dense(32, activation="gelu")(numbers)
    x = keras.layers.Concatenate()([x, extra])
    x = keras.layers.Dense(16, activation="tanh")(x)
    label = keras.layers.Dense(3, activation="softmax", name="label")(x)
    score = keras.layers.Dense(1, name="score")(x)
    return keras.Model([numbers, extra], [label, score], name="two_in_two_out")


def text_classifier(vocab_size: int = 1000, length: int = 20, rnn: str = "lstm"):
    """Embedding + LSTM (or GRU) over token ids."""
    import keras

    layer = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[rnn]
    tokens = keras.Input(shape=(length,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocab_size, 32)(tokens)
    x = layer(32)(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="sentiment")(x)
    return keras.Model(tokens, outputs, name=f"text_{rnn}")


def mobilenet_v2(input_size: int = 96, classes: int = 10):
    """``keras.applications.MobileNetV2`` with random weights (BatchNorm calibrated) at a small
    input size."""
    import keras

    model = keras.applications.MobileNetV2(input_shape=(input_size, input_size, 3), weights=None,
                                           classes=classes, alpha=0.35, name="mobilenet_v2")
    return calibrate_batchnorm(model, batch=8)


def affine_module():
    """A plain ``tf.Module`` (no Keras) with two signatures, for ``tf.saved_model.save``:
    ``__call__`` -> {"y"} (relu(xW + b)) and ``scores`` -> {"logits", "probs"}."""
    import numpy as np
    import tensorflow as tf

    class Affine(tf.Module):
        def __init__(self):
            super().__init__(name="affine")
            rng = np.random.default_rng(1)
            self.w = tf.Variable(rng.standard_normal((4, 3)).astype(np.float32))
            self.b = tf.Variable(rng.standard_normal(3).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def __call__(self, x):
            return {"y": tf.nn.relu(tf.matmul(x, self.w) + self.b)}

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def scores(self, x):
            logits = tf.matmul(x, self.w) + self.b
            return {"probs": tf.nn.softmax(logits), "logits": logits}

    return Affine()


def save_affine_saved_model(path, extra_signatures=None) -> None:
    module = affine_module()
    import tensorflow as tf

    signatures = {"serving_default": module.__call__, "scores": module.scores, **(extra_signatures or {})}
    tf.saved_model.save(module, str(path), signatures=signatures)


def frozen_graphdef(two_outputs: bool = False):
    """A TF1-style frozen GraphDef (variables folded into constants): Placeholder ``x`` [None, 6]
    -> ``Identity`` (softmax(tanh(xW))) and, with ``two_outputs``, ``Identity_1``."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    w = tf.Variable(np.random.default_rng(2).standard_normal((6, 5)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="x")])
    def forward(x):
        hidden = tf.tanh(tf.matmul(x, w))
        if two_outputs:
            return tf.nn.softmax(hidden), hidden * 2.0
        return tf.nn.softmax(hidden)

    return convert_variables_to_constants_v2(forward.get_concrete_function()).graph.as_graph_def()
