"""onnxruntime session options: the gateway's settings, then the model's own ``config.pbtxt``.

A model's ``parameters`` use the keys Triton's onnxruntime backend reads, so one
``config.pbtxt`` tunes a model the same way under the gateway and under Triton:
``intra_op_thread_count``, ``inter_op_thread_count``, ``execution_mode`` (0 sequential,
1 parallel), ``enable_mem_arena``, ``enable_mem_pattern``, ``optimization { graph { level } }``
(-1 basic, 1 extended, 2 none, absent or 0 all), and any ``session.*`` key, passed to
onnxruntime as a session config entry (``session.intra_op.allow_spinning``, say). One key is
the gateway's own: ``custom_op_library``, a custom-op library the model needs
(:mod:`gateway.runtime.custom_ops`). Other parameters are not onnxruntime's and are left alone.
"""

from __future__ import annotations

import os

import onnxruntime as ort
from model_repo import ModelConfig

from ..core.errors import LoadError
from ..settings import RuntimeSettings
from . import custom_ops

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# Triton's optimization.graph.level values.
_CONFIG_LEVELS = {-1: "basic", 1: "extended", 2: "disable"}
_TRUE, _FALSE = {"1", "true", "on", "yes"}, {"0", "false", "off", "no"}


def default_intra_op_threads(settings: RuntimeSettings, instances: int) -> int:
    """Threads per run. onnxruntime's default (0) gives every run one thread per core; with
    several instances running at once that oversubscribes the cores, so they share them."""
    if settings.intra_op_threads or instances == 1:
        return settings.intra_op_threads
    return max(1, len(os.sched_getaffinity(0)) // instances)


def session_options(settings: RuntimeSettings, config: ModelConfig, instances: int,
                    where: str) -> ort.SessionOptions:
    """Options for one version's session; ``where`` names it in errors."""
    options = ort.SessionOptions()
    options.graph_optimization_level = _OPT_LEVELS[settings.graph_optimization_level]
    options.intra_op_num_threads = default_intra_op_threads(settings, instances)
    options.inter_op_num_threads = settings.inter_op_threads
    options.enable_cpu_mem_arena = settings.cpu_arena
    options.log_severity_level = 3  # errors only: fallbacks are reported by us, with reasons

    level = config.optimization.graph.level
    if level:
        if level not in _CONFIG_LEVELS:
            raise LoadError(f"{where}: optimization.graph.level {level} is not one of -1 (basic), "
                            "1 (extended), 2 (none), 0 (all)")
        options.graph_optimization_level = _OPT_LEVELS[_CONFIG_LEVELS[level]]
    params = {key: value.string_value for key, value in config.parameters.items()}
    if "intra_op_thread_count" in params:
        options.intra_op_num_threads = _count(params, "intra_op_thread_count", where)
    if "inter_op_thread_count" in params:
        options.inter_op_num_threads = _count(params, "inter_op_thread_count", where)
    if "execution_mode" in params:
        mode = params["execution_mode"].strip()
        if mode not in ("0", "1"):
            raise LoadError(f"{where}: parameter execution_mode is {mode!r}; expected 0 (sequential) "
                            "or 1 (parallel)")
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL if mode == "1" else ort.ExecutionMode.ORT_SEQUENTIAL
    if "enable_mem_arena" in params:
        options.enable_cpu_mem_arena = _flag(params, "enable_mem_arena", where)
    if "enable_mem_pattern" in params:
        options.enable_mem_pattern = _flag(params, "enable_mem_pattern", where)
    custom_ops.register(options, params, where)
    # Gathered first: onnxruntime warns on stderr when an entry is set twice.
    entries = {"session.intra_op.allow_spinning": "1" if settings.intra_op_spinning else "0"}
    entries.update((key, value) for key, value in params.items() if key.startswith("session."))
    for key, value in entries.items():
        options.add_session_config_entry(key, value)
    return options


def _count(params: dict[str, str], key: str, where: str) -> int:
    value = params[key].strip()
    if not value.isdigit():
        raise LoadError(f"{where}: parameter {key} is {value!r}; expected a whole number of threads "
                        "(0: onnxruntime's default)")
    return int(value)


def _flag(params: dict[str, str], key: str, where: str) -> bool:
    value = params[key].strip().lower()
    if value not in _TRUE | _FALSE:
        raise LoadError(f"{where}: parameter {key} is {value!r}; expected 1/true or 0/false")
    return value in _TRUE
