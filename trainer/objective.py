"""What the model is trained on: the loss, accuracy, and whether the data fits the model.

The loss is inferred from the labels and the model's output unless ``--loss`` names one:
integer labels and a multi-unit output → sparse categorical cross-entropy; labels shaped
like the output → categorical cross-entropy if the output is a softmax, else mean squared
error. ``from_logits`` follows the output layer's activation, so a model ending in a softmax
is not softmaxed twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .features import Features, input_names, model_feed, rows, several_inputs_message, take

LOSSES = ("auto", "sparse_categorical_crossentropy", "categorical_crossentropy",
          "binary_crossentropy", "mse")


@dataclass
class Objective:
    name: str
    loss: object  # a keras.losses.Loss
    classification: bool  # accuracy is reported (and gate-able) only for classifiers


def _output_activation(model) -> str:
    activation = getattr(model.layers[-1], "activation", None)
    return getattr(activation, "__name__", "linear")


def check_inputs(model, x: Features, where: str) -> None:
    """DataError in one line when ``x`` cannot feed ``model``: one array for a one-input model,
    or one array per input name for a model with several."""
    names = input_names(model)
    if len(names) > 1 and not isinstance(x, dict):
        raise DataError(several_inputs_message(where, names))
    given = x if isinstance(x, dict) else {names[0]: x}
    missing = [n for n in names if n not in given]
    if missing:
        raise DataError(f"{where}: no features for the model inputs {missing} (found {sorted(given)})")
    for tensor, name in zip(model.inputs, names):
        _check_input(tensor, given[name], where if len(names) == 1 else f"{where}, input {name!r}")


def _check_input(tensor, x: np.ndarray, where: str) -> None:
    # Text features for a model that takes numbers (or the reverse) would fail deep inside
    # TensorFlow's first step; say it here in one line.
    takes_text = str(tensor.dtype) == "string"
    if (x.dtype.kind in "OSU") != takes_text:
        raise DataError(f"{where}: {'text' if x.dtype.kind in 'OSU' else 'numeric'} features, but the model "
                        f"input takes {'text' if takes_text else 'numbers'}")
    expected = tuple(tensor.shape[1:])
    if len(expected) != x.ndim - 1 or any(e is not None and e != a for e, a in zip(expected, x.shape[1:])):
        raise DataError(f"{where}: features of shape {x.shape[1:]} per example do not fit the "
                        f"model input {expected}")


def _output_shape(model, x: Features | None) -> tuple:
    """The output's shape per example. Keras' declared shape can be wrong: a
    ``TextVectorization(output_mode="multi_hot")`` on a ``(batch, 1)`` text input declares
    ``(batch, 1, tokens)`` and answers ``(batch, tokens)``; so one example of ``x``, when
    given, is run through the model and its answer's shape is taken."""
    if x is None or rows(x) == 0 or len(model.outputs) != 1:
        return tuple(model.outputs[0].shape[1:])
    return tuple(np.shape(model(model_feed(model, take(x, slice(0, 1))), training=False))[1:])


def choose_objective(model, y: np.ndarray, requested: str = "auto", x: Features | None = None) -> Objective:
    """Pick (or check) the loss for ``model`` and labels ``y`` (features ``x``: see
    :func:`_output_shape`); DataError if they do not fit."""
    import keras

    out = _output_shape(model, x)
    if len(model.outputs) != 1 or len(out) != 1 or out[0] is None:
        raise DataError(f"the trainer fine-tunes models with one output of shape (batch, units); got {out}")
    units = out[0]
    activation = _output_activation(model)
    sparse = np.issubdtype(y.dtype, np.integer) and (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1))
    name = requested
    if name == "auto":
        if sparse and units > 1:
            name = "sparse_categorical_crossentropy"
        elif y.ndim == 2 and y.shape[1] == units:
            name = "categorical_crossentropy" if activation == "softmax" else "mse"
        elif y.ndim == 1 and units == 1:
            name = "binary_crossentropy" if activation == "sigmoid" else "mse"
        else:
            raise DataError(f"labels of shape {y.shape[1:] or '()'} per example do not fit the model "
                            f"output ({units},)")
    if name == "sparse_categorical_crossentropy":
        if not sparse:
            raise DataError(f"{name} needs integer class labels, got {y.dtype} of shape {y.shape[1:]}")
        if y.size and (y.min() < 0 or y.max() >= units):
            raise DataError(f"labels range over [{y.min()}, {y.max()}] but the model has {units} classes")
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=activation != "softmax")
        return Objective(name, loss, True)
    if name in ("categorical_crossentropy", "mse", "binary_crossentropy"):
        fits = y.shape[1:] == (units,) or (name == "binary_crossentropy" and units == 1 and y.ndim == 1)
        if not fits:
            raise DataError(f"labels of shape {y.shape[1:]} per example do not fit the model output ({units},)")
        if name == "categorical_crossentropy":
            return Objective(name, keras.losses.CategoricalCrossentropy(from_logits=activation != "softmax"), True)
        if name == "binary_crossentropy":
            return Objective(name, keras.losses.BinaryCrossentropy(from_logits=activation != "sigmoid"), True)
        return Objective(name, keras.losses.MeanSquaredError(), False)
    raise DataError(f"unknown loss {requested!r}; choose from {', '.join(LOSSES)}")


def correct_predictions(objective: Objective, y, pred):
    """Number of correct predictions in a batch (a tensor; works inside a tf.function)."""
    import tensorflow as tf

    if not objective.classification:
        return tf.constant(0.0)
    if objective.name == "binary_crossentropy":
        # A logit of 0 is a probability of 0.5.
        threshold = 0.0 if objective.loss.get_config().get("from_logits") else 0.5
        predicted = tf.reshape(tf.cast(pred > threshold, tf.int64), [-1])
        hit = tf.equal(predicted, tf.reshape(tf.cast(y, tf.int64), [-1]))
    else:
        truth = tf.argmax(y, axis=-1) if objective.name == "categorical_crossentropy" else tf.reshape(tf.cast(y, tf.int64), [-1])
        hit = tf.equal(tf.argmax(pred, axis=-1), truth)
    return tf.reduce_sum(tf.cast(hit, tf.float32))


def evaluate(model, objective: Objective, x: Features, y: np.ndarray,
             batch_size: int = 256) -> dict[str, float]:
    """Mean loss (and accuracy for classifiers) over all of ``x`` in inference mode."""
    total_loss = total_correct = 0.0
    n = rows(x)
    for start in range(0, n, batch_size):
        xb, yb = take(x, slice(start, start + batch_size)), y[start:start + batch_size]
        pred = model(model_feed(model, xb), training=False)
        total_loss += float(objective.loss(yb, pred)) * len(yb)
        total_correct += float(correct_predictions(objective, yb, pred))
    metrics = {"loss": total_loss / n}
    if objective.classification:
        metrics["accuracy"] = total_correct / n
    return metrics
