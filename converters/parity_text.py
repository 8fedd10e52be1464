"""Parity inputs for models that take text or categories.

Random numbers exercise a numeric model; random strings would all be unknown to a
vocabulary and prove only the out-of-vocabulary path. So each row is one of a fixed cycle of
cases built from the model's own vocabulary (:attr:`InputSpec.vocabulary`) and the text a
real client sends: plain and capitalised sentences, punctuation, upper case, non-ASCII
letters (whose case TensorFlow's ``lower`` leaves alone), empty strings, whitespace runs and
unknown tokens. A batch of 8 holds every case once.
"""

from __future__ import annotations

import numpy as np
from model_repo.feedback_format import decode_text

from .errors import SourceError

FALLBACK_WORDS = ("good", "bad", "movie", "plot", "red", "blue")
OOV_WORDS = ("zyzzyva", "qwxvbn", "[UNK]x")
UNICODE_WORDS = ("Ünïcödé", "café", "ÉCOLE", "naïve", "日本語", "🙂", "straße")


def _sentence(rng: np.random.Generator, words: list[str], size: int) -> list[str]:
    return [str(words[i]) for i in rng.integers(0, len(words), size=size)]


def _case(kind: int, rng: np.random.Generator, words: list[str]) -> str:
    if kind == 0:  # a plain sentence of known words
        return " ".join(_sentence(rng, words, int(rng.integers(2, 8))))
    if kind == 1:  # capitalised, with punctuation glued to the words
        first, *rest = _sentence(rng, words, int(rng.integers(2, 6)))
        return f"{first.capitalize()}, {' '.join(rest)}! Really?"
    if kind == 2:
        return ""
    if kind == 3:  # unknown tokens among known ones
        return " ".join([OOV_WORDS[int(rng.integers(0, len(OOV_WORDS)))], *_sentence(rng, words, 2)])
    if kind == 4:  # letters outside ASCII, upper and lower case
        return " ".join([*_sentence(rng, list(UNICODE_WORDS), 2), *_sentence(rng, words, 2)])
    if kind == 5:  # one known value exactly: a categorical column's usual row
        return str(words[int(rng.integers(0, len(words)))])
    if kind == 6:  # all upper case
        return " ".join(_sentence(rng, words, 3)).upper()
    return f"  {'  '.join(_sentence(rng, words, 2))}\t... ;-) \n"  # whitespace runs, punctuation only tokens


CASES = 8
NO_TOKENS = ("", " \t\n ", "?!...")  # texts with no word in them (after TextVectorization's strip)


def generate_strings(vocabulary: tuple, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    words = [w for w in vocabulary if isinstance(w, str) and w.strip()] or list(FALLBACK_WORDS)
    out = np.empty(shape, dtype=object)
    flat = out.reshape(-1)
    for i in range(flat.size):
        flat[i] = _case(i % CASES, rng, words)
    return out


def generate_integers(vocabulary: tuple, shape: tuple[int, ...], dtype: np.dtype,
                      rng: np.random.Generator) -> np.ndarray:
    """Known values of an integer lookup, and one it does not know (its largest plus 7)."""
    known = np.asarray([v for v in vocabulary if isinstance(v, int | np.integer)], dtype=np.int64)
    pool = np.concatenate([known, [known.max() + 7]]) if known.size else np.arange(10)
    return rng.choice(pool, size=shape).astype(dtype)


def as_text(array: np.ndarray, where: str) -> np.ndarray:
    """An array of ``str`` objects (``model_repo.feedback_format.decode_text``), or a
    SourceError naming ``where``."""
    try:
        return decode_text(array)
    except ValueError as exc:
        raise SourceError(f"{where}: {exc}") from None


def read_lines(path, specs) -> dict[str, np.ndarray]:
    """``--parity-data FILE.txt``: one text per line, for a model whose one input is text."""
    if len(specs) != 1 or specs[0].dtype.kind != "O":
        raise SourceError(f"--parity-data {path}: a text file serves a model with one text input only; "
                          "use an .npz with one array per input")
    try:
        lines = [line.rstrip("\r\n") for line in open(path, encoding="utf-8")]
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"--parity-data {path}: cannot read it as UTF-8 text: {exc}") from None
    if not lines:
        raise SourceError(f"--parity-data {path}: holds no lines")
    array = np.array(lines, dtype=object)
    return {specs[0].name: array.reshape((-1,) + (1,) * (len(specs[0].shape) - 1))}


def strings_equal(reference: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Element-wise equality of text outputs (TensorFlow answers bytes, onnxruntime str)."""
    def text(x):
        return x.decode("utf-8", errors="replace") if isinstance(x, bytes) else str(x)

    ref = np.vectorize(text, otypes=[object])(reference)
    got = np.vectorize(text, otypes=[object])(actual)
    return ref == got
