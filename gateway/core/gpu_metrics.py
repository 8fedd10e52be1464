"""Triton's GPU figures on ``/metrics`` (``nv_gpu_utilization``, ``nv_gpu_memory_used_bytes``,
``nv_gpu_memory_total_bytes``, labelled ``gpu_uuid``), read through NVML (nvidia-ml-py).

NVML is probed once, at the first scrape, never at import or build time. Without a GPU (no
driver library, no device, or ``CUDA_VISIBLE_DEVICES`` hiding them all) the probe finds
nothing and every later scrape returns at once: the families are absent and no NVML call is
made. With GPUs, each scrape asks NVML for each visible device's utilisation and memory,
which the driver answers from its counters (microseconds, no device round trip).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger("tunegate.gateway.gpu")


class GpuCollector(Collector):
    def __init__(self) -> None:
        self._devices: list[tuple[str, Any]] | None = None  # (uuid, NVML handle); None: not probed
        self._nvml: Any = None

    @property
    def devices(self) -> list[str] | None:
        """The UUIDs reported on; None before the first scrape probed NVML."""
        return None if self._devices is None else [uuid for uuid, _ in self._devices]

    def collect(self) -> Iterator[Metric]:
        if self._devices is None:
            self._devices = self._probe()
        if not self._devices:
            return
        nvml = self._nvml
        utilization = Metric("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", "gauge")
        used = Metric("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", "gauge")
        total = Metric("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", "gauge")
        for uuid, handle in self._devices:
            labels = {"gpu_uuid": uuid}
            try:
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except nvml.NVMLError as exc:  # a lost or reset device: its samples go, the others stay
                log.debug("NVML could not read %s: %s", uuid, exc)
                continue
            utilization.add_sample("nv_gpu_utilization", labels, rates.gpu / 100.0)
            used.add_sample("nv_gpu_memory_used_bytes", labels, float(memory.used))
            total.add_sample("nv_gpu_memory_total_bytes", labels, float(memory.total))
        yield from (utilization, used, total)

    def _probe(self) -> list[tuple[str, Any]]:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None and visible.strip() in ("", "-1"):
            return []
        try:
            import pynvml  # nvidia-ml-py; imported here so a host without it serves on
            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            devices = [(_text(pynvml.nvmlDeviceGetUUID(h)), h) for h in handles]
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded, ...
            log.debug("no GPU metrics: %s", exc)
            return []
        self._nvml = pynvml
        return _visible(devices, visible)


def _visible(devices: list[tuple[str, Any]], visible: str | None) -> list[tuple[str, Any]]:
    """The devices CUDA_VISIBLE_DEVICES lets this process use (indices or UUIDs, as CUDA reads it)."""
    if visible is None:
        return devices
    chosen = []
    for item in (part.strip() for part in visible.split(",")):
        if item.isdigit() and int(item) < len(devices):
            chosen.append(devices[int(item)])
        elif item.startswith("GPU-"):
            chosen += [d for d in devices if d[0].startswith(item)]
        else:
            break  # CUDA stops at the first entry it cannot use
    return chosen


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
