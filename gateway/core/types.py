"""The protocol-neutral request and response: what every front end decodes into and
encodes from, and what the core (DataPlane, batcher, loop observers) works on."""

from __future__ import annotations

import contextvars
import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

# The id the client sees for the request being handled (X-Request-ID over HTTP, the request
# id or metadata over gRPC), set by the front end, so a captured infer can be labelled later.
REQUEST_ID = contextvars.ContextVar[str | None]("tunegate_request_id", default=None)


class RequestIds:
    """Ids for requests that came without one: a random per-process prefix and a counter
    (unique like a uuid4, without a call into the kernel's random source per request)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


@dataclass
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray  # already shaped


@dataclass
class OutputRequest:
    name: str
    binary: bool | None = None  # None: follow the request's binary_data_output
    shared_memory: tuple[str, int, int] | None = None  # (region, offset, byte_size) to write it into


@dataclass
class InferRequest:
    inputs: list[InputTensor]
    outputs: list[OutputRequest] | None = None  # None: every output
    id: str | None = None
    binary_output: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)
    # The spec each input's header was checked against while decoding (a front end's codec
    # sets it): the DataPlane checks the headers again only against another signature.
    checked: InputSpec | None = None


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    outputs: list[tuple[str, np.ndarray, bool]]  # name, array, send as binary
    id: str | None = None
    lineage_id: str | None = None  # model_repo.lineage: the exact version that answered


class InputSpec(Protocol):
    """What a request's inputs may be: checked on each input's header, before its data is
    decoded, so a wrong name, datatype or shape costs no allocation."""

    def check_input(self, name: str, datatype: str, shape: list[int]) -> None: ...
