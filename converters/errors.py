"""Errors raised while converting a model.

Every error carries the HTTP status a server would answer with and the exit code of
``tunegate convert``; nothing is published when one is raised::

    ConversionError (500, exit 1)
    ├── SourceError (400, exit 2)          unknown, missing or corrupt source file, bad arguments
    │   └── CustomObjectError (400, exit 3)  a custom layer/object that cannot be deserialised
    ├── UnsupportedOpError (422, exit 4)   an op the converter left unconverted (named)
    ├── InvalidModelError (500, exit 5)    the ONNX model fails onnx.checker or onnxruntime's load
    └── ParityError (422, exit 6)          ONNX answers differ from the source model's beyond tolerance
"""

from __future__ import annotations


class ConversionError(Exception):
    status = 500
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
