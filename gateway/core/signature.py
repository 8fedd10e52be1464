"""A model's inputs and outputs from its ``config.pbtxt``, and the checks every request
passes before it is queued (TGI's rule: validate completely, then queue)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from model_repo import ModelConfig, datatypes

from .types import InferRequest
from .errors import BadRequest, brief


@dataclass(frozen=True)
class TensorMeta:
    name: str
    datatype: str  # v2 name
    dims: tuple[int, ...]  # without the batch dimension when the model batches

    def shape(self, batching: bool) -> list[int]:
        return ([-1] if batching else []) + list(self.dims)

    def fits(self, dims: tuple[int, ...]) -> bool:
        """Whether ``dims`` (without the batch dimension) is a shape this tensor takes."""
        return len(dims) == len(self.dims) and all(d == -1 or d == s for d, s in zip(self.dims, dims))

    def to_v2(self, batching: bool) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape(batching)}


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    max_batch_size: int

    @functools.cached_property
    def _by_name(self) -> dict[str, TensorMeta]:
        return {t.name: t for t in self.inputs}

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    @classmethod
    def from_config(cls, config: ModelConfig) -> Signature:
        def metas(tensors) -> tuple[TensorMeta, ...]:
            return tuple(TensorMeta(t.name, datatypes.BY_CONFIG[t.data_type].v2, tuple(t.dims)) for t in tensors)

        return cls(metas(config.input), metas(config.output), config.max_batch_size)

    @functools.cached_property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def check_input(self, name: str, datatype: str, shape: list[int] | tuple[int, ...]) -> None:
        """One input's header against the model (the codec calls it before decoding data)."""
        meta = self._by_name.get(name)
        if meta is None:
            raise BadRequest(f"unexpected input {brief(name)}; the model takes {sorted(self._by_name)}")
        if datatype != meta.datatype:
            raise BadRequest(f"input {name!r} has datatype {datatype}, the model expects {meta.datatype}")
        dims = tuple(shape)
        if self.max_batch_size > 0:
            if not dims:
                raise BadRequest(f"input {name!r} needs a batch dimension")
            batch, dims = dims[0], dims[1:]
            if not 1 <= batch <= self.max_batch_size:
                raise BadRequest(f"input {name!r} has batch size {batch}; the model accepts 1 to "
                                 f"{self.max_batch_size}")
        if dims != meta.dims and not meta.fits(dims):  # equal: the usual case, one comparison
            raise BadRequest(f"input {name!r} has shape {list(shape)}, the model expects "
                             f"{meta.shape(self.batching)}")

    def check(self, request: InferRequest) -> tuple[dict[str, np.ndarray], int]:
        """The model's feeds and the request's batch size (1 for a model that does not batch).
        Each input's header is checked here unless the codec checked it against this signature."""
        if request.checked is not self:
            for tensor in request.inputs:
                self.check_input(tensor.name, tensor.datatype, tensor.shape)
        given = {t.name: t for t in request.inputs}
        if len(given) < len(self._by_name):  # every given name is known by now
            missing = sorted(self._by_name.keys() - given.keys())
            raise BadRequest(f"missing input {missing[0]!r}; the model takes {sorted(self._by_name)}")
        feeds = {name: given[name].data for name in self._by_name}
        if not self.batching:
            return feeds, 1
        rows = {given[name].shape[0] for name in self._by_name}
        if len(rows) > 1:
            raise BadRequest(f"the inputs have different batch sizes {sorted(rows)}")
        return feeds, rows.pop()

    def check_outputs(self, names: list[str]) -> None:
        known = self._output_set
        for name in names:
            if name not in known:
                raise BadRequest(f"unknown output {name!r}; the model has {self.output_names}")

    @functools.cached_property
    def _output_set(self) -> frozenset[str]:
        return frozenset(t.name for t in self.outputs)
