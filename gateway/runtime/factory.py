"""The registry's runtime factory: each model's versions on the runtime its settings name
(``kind``): onnxruntime in this process, or forwarded to a fleet of Triton servers."""

from __future__ import annotations

from collections.abc import Callable

from model_repo import ModelConfig, Repository

from ..settings import Settings
from .base import Runtime
from .endpoints import TritonFleet
from .onnx import OnnxRuntime
from .triton import TritonRuntime

RuntimeFactory = Callable[[Repository, str, int, ModelConfig, Settings], Runtime]


def onnx_runtime(repo: Repository, model: str, version: int, config: ModelConfig, settings: Settings) -> Runtime:
    # model_path() stats the version directory: called from a worker thread.
    return OnnxRuntime(model, version, config, settings.runtime_for(model), repo.model_path(model, version))


def runtime_factory(fleet: TritonFleet) -> RuntimeFactory:
    """The factory for every kind; Triton endpoint pools come from ``fleet`` (shared)."""

    def factory(repo: Repository, model: str, version: int, config: ModelConfig, settings: Settings) -> Runtime:
        if settings.runtime_for(model).kind == "triton":
            return TritonRuntime(model, version, config, settings.runtime_for(model), fleet)
        return onnx_runtime(repo, model, version, config, settings)

    return factory
