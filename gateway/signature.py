"""A model's inputs and outputs from its ``config.pbtxt``, and the checks every request
passes before it is queued (TGI's rule: validate completely, then queue)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from model_repo import ModelConfig, datatypes

from .codec import InferRequest
from .errors import BadRequest


@dataclass(frozen=True)
class TensorMeta:
    name: str
    datatype: str  # v2 name
    dims: tuple[int, ...]  # without the batch dimension when the model batches

    def shape(self, batching: bool) -> list[int]:
        return ([-1] if batching else []) + list(self.dims)

    def to_v2(self, batching: bool) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape(batching)}


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    max_batch_size: int

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    @classmethod
    def from_config(cls, config: ModelConfig) -> Signature:
        def metas(tensors) -> tuple[TensorMeta, ...]:
            return tuple(TensorMeta(t.name, datatypes.BY_CONFIG[t.data_type].v2, tuple(t.dims)) for t in tensors)

        return cls(metas(config.input), metas(config.output), config.max_batch_size)

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def check(self, request: InferRequest) -> tuple[dict[str, np.ndarray], int]:
        """The model's feeds and the request's batch size (1 for a model that does not batch)."""
        given = {t.name: t for t in request.inputs}
        expected = {t.name for t in self.inputs}
        unknown = sorted(given.keys() - expected)
        if unknown:
            raise BadRequest(f"unexpected input {unknown[0]!r}; the model takes {sorted(expected)}")
        missing = sorted(expected - given.keys())
        if missing:
            raise BadRequest(f"missing input {missing[0]!r}; the model takes {sorted(expected)}")
        rows: int | None = None
        feeds: dict[str, np.ndarray] = {}
        for meta in self.inputs:
            tensor = given[meta.name]
            if tensor.datatype != meta.datatype:
                raise BadRequest(f"input {meta.name!r} has datatype {tensor.datatype}, the model expects "
                                 f"{meta.datatype}")
            shape = list(tensor.shape)
            if self.batching:
                if not shape:
                    raise BadRequest(f"input {meta.name!r} needs a batch dimension")
                batch, shape = shape[0], shape[1:]
                if not 1 <= batch <= self.max_batch_size:
                    raise BadRequest(f"input {meta.name!r} has batch size {batch}; the model accepts 1 to "
                                     f"{self.max_batch_size}")
                if rows is not None and batch != rows:
                    raise BadRequest(f"input {meta.name!r} has batch size {batch}, other inputs {rows}")
                rows = batch
            if len(shape) != len(meta.dims) or any(d != -1 and d != s for d, s in zip(meta.dims, shape)):
                raise BadRequest(f"input {meta.name!r} has shape {list(tensor.shape)}, the model expects "
                                 f"{meta.shape(self.batching)}")
            feeds[meta.name] = tensor.data
        return feeds, rows if rows is not None else 1

    def check_outputs(self, names: list[str]) -> None:
        known = set(self.output_names)
        for name in names:
            if name not in known:
                raise BadRequest(f"unknown output {name!r}; the model has {self.output_names}")
