"""The onnxruntime backend: one InferenceSession per loaded version.

onnxruntime allows concurrent ``run`` calls on one session, so ``instance_count`` is the
number of worker threads (``Workers``) rather than a number of sessions (one copy of the
weights). Session creation, warm-up and every run happen on those threads, never on the
event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from model_repo import ModelConfig, datatypes

from ..core.errors import BadRequest, InferenceError, LoadError
from ..settings import RuntimeSettings
from . import warmup
from .base import Runtime
from .memory import release_freed_memory
from .providers import CUDA, ProviderChoice, choose_provider
from .session_options import session_options
from .workers import Workers

log = logging.getLogger("tunegate.runtime")

def instance_count(config: ModelConfig, settings: RuntimeSettings) -> int:
    """config.pbtxt's ``instance_group`` counts win over the settings, as in Triton."""
    counts = sum(group.count for group in config.instance_group)
    return counts if counts > 0 else settings.instance_count


class OnnxRuntime(Runtime):
    platform = "onnxruntime_onnx"

    def __init__(self, model: str, version: int, config: ModelConfig, settings: RuntimeSettings,
                 path: Path) -> None:
        super().__init__(model, version, config, settings)
        self.path = path
        self._instances = instance_count(config, settings)
        self._workers: Workers | None = None
        self._session: ort.InferenceSession | None = None
        self._choice: ProviderChoice | None = None
        self.warmup_runs = 0  # warm-up inferences run at load (shown in the metadata)

    @property
    def concurrency(self) -> int:
        return self._instances

    @property
    def provider(self) -> str:
        return self._session.get_providers()[0] if self._session is not None else "unloaded"

    def parameters(self) -> dict[str, Any]:
        params = super().parameters()
        if self._choice is not None:
            params["provider_reason"] = self._choice.reason
        params["warmup_runs"] = self.warmup_runs
        return params

    # ------------------------------------------------------------------ load
    async def load(self) -> None:
        self._workers = Workers(self._instances, f"ort-{self.model}-{self.version}")
        try:
            await self._workers.run(self._load_blocking)
        except BaseException:
            await self.unload()
            raise
        self.ready = True

    def _load_blocking(self) -> None:
        choice = choose_provider(self.settings)
        options = session_options(self.settings, self.config, self._instances, f"{self.model} version {self.version}")
        try:
            session = ort.InferenceSession(str(self.path), sess_options=options, providers=choice.providers)
        except Exception as exc:  # onnxruntime raises its own exception types, all as "not loadable"
            raise LoadError(f"{self.model} version {self.version}: onnxruntime cannot load "
                            f"{self.path.name}: {exc}") from None
        if choice.name == CUDA and session.get_providers()[0] != CUDA:
            # onnxruntime fell back on its own (e.g. missing CUDA libraries).
            if self.settings.provider == "cuda":
                raise LoadError(f"{self.model} version {self.version}: provider=cuda requested but "
                                "onnxruntime could not create a CUDA session (CUDA/cuDNN libraries?)")
            choice = ProviderChoice(session.get_providers()[0], choice.providers,
                                    "provider=auto fell back to CPU: onnxruntime could not create a CUDA session")
        self._check_io(session)
        self._session, self._choice = session, choice
        log.info("%s version %s: %s (%s), %d instance(s)", self.model, self.version, self.provider,
                 choice.reason, self._instances)
        self._warm_up()

    def _warm_up(self) -> None:
        """The config's ``model_warmup`` (else zeros at the preferred batch sizes), before the
        version is marked ready; a failure fails the load, with its reason."""
        try:
            runs = warmup.plan(self.config, self.signature, self.path.parent.parent, self.settings.warmup)
            done = warmup.run_all(runs, lambda feeds: self._run_blocking(self.prepare(feeds),
                                                                         self.signature.output_names))
        except warmup.WarmupError as exc:
            raise LoadError(f"{self.model} version {self.version}: {exc}") from None
        self.warmup_runs = done
        if done:
            log.info("%s version %s: warm-up ran %d time(s): %s", self.model, self.version, done,
                     ", ".join(f"{r.name!r} x{r.runs}" for r in runs))

    def _check_io(self, session: ort.InferenceSession) -> None:
        """config.pbtxt is the contract clients see; refuse a model file that does not honour it."""
        have = {i.name: i for i in session.get_inputs()}
        outs = {o.name: o for o in session.get_outputs()}
        extra_batch = 1 if self.signature.batching else 0
        for kind, metas, actual in (("input", self.signature.inputs, have), ("output", self.signature.outputs, outs)):
            for meta in metas:
                arg = actual.get(meta.name)
                if arg is None:
                    raise LoadError(f"{self.model} version {self.version}: config {kind} {meta.name!r} is "
                                    f"not in the ONNX model (it has {sorted(actual)})")
                if arg.type != datatypes.from_v2(meta.datatype).onnxruntime_type:
                    raise LoadError(f"{self.model} version {self.version}: {kind} {meta.name!r} is {arg.type} "
                                    f"in the ONNX model, {meta.datatype} in config.pbtxt")
                if kind == "input" and len(arg.shape) != len(meta.dims) + extra_batch:
                    raise LoadError(f"{self.model} version {self.version}: input {meta.name!r} has rank "
                                    f"{len(arg.shape)} in the ONNX model, config.pbtxt implies "
                                    f"{len(meta.dims) + extra_batch}")
        missing = sorted(set(have) - {m.name for m in self.signature.inputs})
        if missing:
            raise LoadError(f"{self.model} version {self.version}: the ONNX model also needs input(s) "
                            f"{missing} that config.pbtxt does not declare")

    # --------------------------------------------------------------- predict
    def prepare(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # onnxruntime's Python binding takes string tensors as str (it would turn a bytes
        # object into "b'...'" and cut numpy bytes at the first NUL), so BYTES must be UTF-8.
        for meta in self.signature.inputs:
            if meta.datatype != "BYTES":
                continue
            array = inputs[meta.name]
            text = np.empty(array.shape, dtype=object)
            try:
                text.reshape(-1)[:] = [x.decode() if isinstance(x, bytes) else x for x in array.reshape(-1)]
            except UnicodeDecodeError as exc:
                raise BadRequest(f"input {meta.name!r}: onnxruntime string tensors hold UTF-8 text: {exc}") from None
            inputs = {**inputs, meta.name: text}
        return inputs

    async def predict(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        if self._session is None or self._workers is None:
            raise InferenceError(f"{self.model} version {self.version} is not loaded")
        return await self._workers.run(self._run_blocking, inputs, list(outputs))

    def _run_blocking(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        session = self._session
        assert session is not None
        try:
            results = session.run(outputs, inputs)
        except Exception as exc:
            raise InferenceError(f"{self.model} version {self.version}: onnxruntime failed: {exc}") from None
        return dict(zip(outputs, results))

    # ---------------------------------------------------------------- unload
    async def unload(self) -> None:
        self.ready = False
        workers, self._workers = self._workers, None
        if workers is not None:
            # Waiting for the worker threads would block the loop; wait in a thread instead.
            await asyncio.to_thread(workers.shutdown)
        self._session = None
        await asyncio.to_thread(release_freed_memory)  # see runtime/memory.py: what it measured
