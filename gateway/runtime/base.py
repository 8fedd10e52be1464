"""The runtime interface: one object per loaded model version.

A runtime owns whatever executes the model (an onnxruntime session, later a connection to
tritonserver); the registry owns routing, batching and draining, so a backend only has to
load, run a (possibly merged) batch, and unload.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from model_repo import ModelConfig

from ..core.batching import BatchPolicy
from ..settings import RuntimeSettings
from ..core.signature import Signature


class Runtime(ABC):
    platform: str = ""

    def __init__(self, model: str, version: int, config: ModelConfig, settings: RuntimeSettings) -> None:
        self.model = model
        self.version = version
        self.config = config
        self.settings = settings
        self.signature = Signature.from_config(config)
        self.ready = False

    @property
    def concurrency(self) -> int:
        """How many ``predict`` calls may run at once (the batcher never exceeds it)."""
        return 1

    @property
    def provider(self) -> str:
        """Where the model runs, for metadata and metrics (e.g. ``CPUExecutionProvider``)."""
        return "unknown"

    def parameters(self) -> dict[str, Any]:
        """Extra facts shown in the model's metadata under ``parameters``."""
        return {"execution_provider": self.provider, "instance_count": self.concurrency}

    def batch_policy(self, default_max_queue_size: int) -> BatchPolicy:
        """How the gateway queues and merges this version's requests: its config's
        ``dynamic_batching`` (priority levels and queue policies included)."""
        return BatchPolicy.from_config(self.config, default_max_queue_size)

    def prepare(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Convert validated inputs to what this backend takes (raise ``BadRequest`` if it
        cannot); runs before the request is queued."""
        return inputs

    @abstractmethod
    async def load(self) -> None:
        """Make the version ready to serve (and warm); raise ``LoadError`` if it cannot be."""

    @abstractmethod
    async def predict(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Run one batch; must not block the event loop."""

    @abstractmethod
    async def unload(self) -> None:
        """Release everything; called once no request uses this version any more."""
