"""Errors raised while converting a model.

Every error carries the HTTP status a server would answer with and the exit code of
``tunegate convert``; nothing is published when one is raised::

    ConversionError (500, exit 1)          anything else that failed (the cause is named)
    ├── SourceError (400, exit 2)          unknown, missing or corrupt source file, bad arguments
    │   └── CustomObjectError (400, exit 3)  a custom layer/object that cannot be deserialised
    ├── UnsupportedOpError (422, exit 4)   an op the converter left unconverted (named)
    │   └── UnsupportedLayerError (422, exit 4)  a layer refused before conversion (named, with what to do)
    ├── InvalidModelError (500, exit 5)    the ONNX model fails onnx.checker or onnxruntime's load
    └── ParityError (422, exit 6)          ONNX answers differ from the source model's beyond tolerance

An error raised inside a conversion names its stage (:data:`STAGES`) first, ``load: ...``;
any other exception raised there becomes a :class:`ConversionError` naming the stage and the
cause (:func:`stage`), so ``tunegate convert`` never ends in a traceback.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

# What a conversion does, in order: read the source (and refuse layers before any work),
# trace it to a TensorFlow graph, convert that to ONNX (and check it), compare the answers,
# write the version.
STAGES = ("load", "trace", "convert", "parity", "publish")


class ConversionError(Exception):
    status = 500
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.stage: str | None = None  # set by stage(): where in the conversion it was raised

    def __str__(self) -> str:
        # One line whatever the cause said: the CLI prints it as one error line.
        text = " ".join(self.message.split("\n"))
        return f"{self.stage}: {text}" if self.stage else text


class SourceError(ConversionError):
    status = 400
    exit_code = 2


class CustomObjectError(SourceError):
    exit_code = 3

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class UnsupportedOpError(ConversionError):
    status = 422
    exit_code = 4

    def __init__(self, message: str, ops: list[str] | None = None) -> None:
        super().__init__(message)
        self.ops = list(ops or [])


class UnsupportedLayerError(UnsupportedOpError):
    """A layer (or layer configuration) that cannot be expressed in ONNX, refused before
    conversion; the message names the layer and what to do instead."""

    def __init__(self, message: str, layers: list[str] | None = None) -> None:
        super().__init__(message)
        self.layers = list(layers or [])


class InvalidModelError(ConversionError):
    exit_code = 5


class ParityError(ConversionError):
    status = 422
    exit_code = 6

    def __init__(self, message: str, report: dict | None = None) -> None:
        super().__init__(message)
        self.report = report


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (at most 300 characters), for messages."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cause(exc: BaseException) -> str:
    """The line of an exception's message that says what went wrong (at most 300 characters):
    Keras wraps a layer's error in "Exception encountered when calling X.call()." and puts the
    cause on a later line, in terminal colours."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Exception encountered when calling")]
    return (useful or lines or [type(exc).__name__])[0][:300]


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Names ``name`` in a :class:`ConversionError` raised inside (the innermost stage wins),
    and turns any other exception into one, naming its type and first line: a converter
    that meets a model nobody foresaw says where and why instead of ending in a traceback."""
    assert name in STAGES, name
    try:
        yield
    except ConversionError as exc:
        if exc.stage is None:
            exc.stage = name
        raise
    except Exception as exc:
        if hasattr(exc, "status"):
            # Our other documented errors (model_repo's, say) keep their type, which callers
            # catch; the stage rides along for the CLI's line (as_conversion_error).
            if getattr(exc, "conversion_stage", None) is None:
                exc.conversion_stage = name
            raise
        # Anything else: TensorFlow, tf2onnx, onnx and numpy raise their own types.: TensorFlow, tf2onnx, onnx and numpy raise their own types
        error = ConversionError(f"{type(exc).__name__}: {cause(exc)}")
        error.stage = name
        raise error from exc


def as_conversion_error(exc: Exception) -> Exception:
    """For the CLI's one line: a documented error of another package raised inside a stage,
    as a ConversionError naming that stage, with the original's exit code."""
    where = getattr(exc, "conversion_stage", None)
    if where is None or isinstance(exc, ConversionError):
        return exc
    error = ConversionError(str(exc))
    error.stage = where
    error.exit_code = int(getattr(exc, "exit_code", 1))
    return error
