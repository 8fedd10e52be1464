"""Tiny Keras models that take raw text and raw columns, adapted on made-up data (nothing
downloaded), for the converter's and the gateway's tests of issue 25."""

from __future__ import annotations

import numpy as np

CORPUS = [
    "The movie was great!", "Terrible, boring film.", "I loved it; truly wonderful.", "Worst plot ever...",
    "great acting and a great story", "boring boring boring", "Café naïve, très bien", "what a FILM",
]
COLORS = ["red", "green", "blue", "red", "green", "teal"]
SIZES = [3, 7, 42, 100, 7, 3]

# Texts a client sends: punctuation, upper case, non-ASCII, empty, unknown words, whitespace runs.
TEXTS = ["The movie was GREAT!", "", "Ünïcödé ÉCOLE café", "zyzzyva qwxv great", "boring,boring;film...",
         "  loved \t it \n ", "日本語 🙂", "what a film"]


def _head(x, classes: int = 2, name: str = "probs"):
    import keras

    return keras.layers.Dense(classes, activation="softmax", name=name)(x)


def sentiment(split: str = "whitespace", length: int = 12):
    """keras.Input((1,), string) -> TextVectorization -> Embedding -> GlobalAveragePooling1D ->
    Dense(softmax), as in Keras' text-classification guide."""
    import keras

    keras.utils.set_random_seed(1)
    vectorize = keras.layers.TextVectorization(max_tokens=60, output_sequence_length=length, split=split)
    vectorize.adapt(CORPUS)
    text = keras.Input((1,), dtype="string", name="text")
    x = keras.layers.Embedding(60, 8)(vectorize(text))
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(text, _head(x), name=f"sentiment_{split}")


def bag_of_words():
    """TextVectorization(output_mode="multi_hot") -> Dense(softmax)."""
    import keras

    keras.utils.set_random_seed(2)
    vectorize = keras.layers.TextVectorization(max_tokens=40, output_mode="multi_hot")
    vectorize.adapt(CORPUS)
    text = keras.Input((1,), dtype="string", name="text")
    return keras.Model(text, _head(keras.layers.Dense(8, activation="relu")(vectorize(text))), name="bag_of_words")


def structured():
    """Keras' structured-data recipe: numeric columns through Normalization, a string column
    through StringLookup + CategoryEncoding, an integer column through IntegerLookup (one-hot)."""
    import keras

    keras.utils.set_random_seed(3)
    numbers = keras.Input((3,), name="numbers")
    color = keras.Input((1,), dtype="string", name="color")
    size = keras.Input((1,), dtype="int64", name="size")
    normalize = keras.layers.Normalization()
    normalize.adapt(np.random.default_rng(0).normal(5, 2, (64, 3)).astype("float32"))
    colors = keras.layers.StringLookup()
    colors.adapt(COLORS)
    one_hot_color = keras.layers.CategoryEncoding(num_tokens=colors.vocabulary_size(), output_mode="one_hot")
    sizes = keras.layers.IntegerLookup(output_mode="one_hot")
    sizes.adapt(np.array(SIZES))
    x = keras.layers.Concatenate()([normalize(numbers), one_hot_color(colors(color)), sizes(size)])
    x = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model([numbers, color, size], _head(x, 3, "class_probs"), name="structured")


def structured_rows(n: int = 8, seed: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    colors = np.array([[c] for c in (COLORS + ["purple", "", "RED", "grün"])[:n]], dtype=object)
    return {"numbers": rng.normal(5, 2, (n, 3)).astype(np.float32), "color": colors,
            "size": np.array([[v] for v in (SIZES + [5, -1, 0, 99])[:n]], dtype=np.int64)}


def text_rows(texts=TEXTS) -> dict[str, np.ndarray]:
    return {"text": np.array([[t] for t in texts], dtype=object)}


def keras_answers(model, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import tensorflow as tf

    inputs = [tf.constant(feeds[_name(t)]) for t in model.inputs]
    return np.asarray(model(inputs if len(inputs) > 1 else inputs[0], training=False))


def _name(tensor) -> str:
    history = getattr(tensor, "_keras_history", None)
    return history[0].name if history else tensor.name
