"""Choosing onnxruntime's execution provider: ``auto``, ``cuda`` or ``cpu``.

onnxruntime-gpu lists ``CUDAExecutionProvider`` as available even on a machine without a
GPU or driver (and then silently runs on CPU), so the device is probed through NVML, the
driver's own library, loaded with ctypes (no extra dependency). The chapter's rule applies:
a GPU with less than ``min_gpu_memory`` is not fit for serving.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort

from ..core.errors import LoadError
from ..settings import RuntimeSettings

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@dataclass
class ProviderChoice:
    name: str  # CUDA or CPU
    providers: list[Any]  # what InferenceSession(providers=...) gets
    reason: str  # why, for the log and the metadata


def gpu_total_memory(device_id: int) -> tuple[int | None, str]:
    """Total memory of CUDA device ``device_id`` in bytes, or None and why not."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None, "no NVIDIA driver (libnvidia-ml.so.1 not found)"

    class _Memory(ctypes.Structure):
        _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

    if nvml.nvmlInit_v2() != 0:
        return None, "NVML failed to initialise (driver not loaded?)"
    try:
        count = ctypes.c_uint()
        if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0 or device_id >= count.value:
            return None, f"no CUDA device {device_id} ({count.value} present)"
        handle = ctypes.c_void_p()
        if nvml.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(device_id), ctypes.byref(handle)) != 0:
            return None, f"NVML cannot open device {device_id}"
        memory = _Memory()
        if nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != 0:
            return None, f"NVML cannot read the memory of device {device_id}"
        return int(memory.total), ""
    finally:
        nvml.nvmlShutdown()


def cuda_unfit_reason(settings: RuntimeSettings) -> str | None:
    """Why CUDA cannot serve with these settings, or None when it can."""
    if CUDA not in ort.get_available_providers():
        return "this onnxruntime build has no CUDAExecutionProvider"
    total, why = gpu_total_memory(settings.device_id)
    if total is None:
        return why
    if total < settings.min_gpu_memory:
        return (f"CUDA device {settings.device_id} has {total / 2**30:.2f} GiB, under min_gpu_memory "
                f"{settings.min_gpu_memory / 2**30:.2f} GiB: not fit for serving")
    return None


def cuda_options(settings: RuntimeSettings) -> dict[str, Any]:
    options: dict[str, Any] = {"device_id": settings.device_id,
                               "arena_extend_strategy": settings.arena_extend_strategy}
    if settings.gpu_mem_limit is not None:
        options["gpu_mem_limit"] = int(settings.gpu_mem_limit)
    return options


def choose_provider(settings: RuntimeSettings) -> ProviderChoice:
    if settings.provider == "cpu":
        return ProviderChoice(CPU, [CPU], "provider=cpu")
    unfit = cuda_unfit_reason(settings)
    if unfit is None:
        options = cuda_options(settings)
        return ProviderChoice(CUDA, [(CUDA, options), CPU], f"provider={settings.provider}: CUDA device "
                              f"{settings.device_id} is fit")
    if settings.provider == "cuda":
        raise LoadError(f"provider=cuda requested but CUDA cannot serve: {unfit}")
    return ProviderChoice(CPU, [CPU], f"provider=auto fell back to CPU: {unfit}")
