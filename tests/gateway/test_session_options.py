"""onnxruntime session options: settings first, then the model's config.pbtxt parameters
under the keys Triton's onnxruntime backend reads. Checked on real sessions."""

from __future__ import annotations

import os

import onnxruntime as ort
import pytest

from gateway.core.errors import LoadError
from gateway.runtime.session_options import session_options
from gateway.settings import RuntimeSettings

from . import models


def _session(options: ort.SessionOptions) -> ort.SessionOptions:
    session = ort.InferenceSession(models.mlp_fp32(), options, providers=["CPUExecutionProvider"])
    return session.get_session_options()


def test_settings_apply_when_the_config_names_nothing():
    config = models.mlp_config("mlp")
    got = _session(session_options(RuntimeSettings(intra_op_threads=1, intra_op_spinning=False), config, 1, "mlp"))
    assert got.intra_op_num_threads == 1
    assert got.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert got.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_several_instances_share_the_cores_by_default():
    got = _session(session_options(RuntimeSettings(), models.mlp_config("mlp"), 2, "mlp"))
    assert got.intra_op_num_threads == max(1, len(os.sched_getaffinity(0)) // 2)


def test_triton_parameters_in_config_win_over_settings():
    config = models.mlp_config("mlp")
    for key, value in {"intra_op_thread_count": "1", "inter_op_thread_count": "1", "execution_mode": "1",
                       "enable_mem_pattern": "false", "session.intra_op.allow_spinning": "0",
                       "not_for_onnxruntime": "kept out"}.items():
        config.parameters[key].string_value = value
    config.optimization.graph.level = 2
    options = session_options(RuntimeSettings(intra_op_threads=2, intra_op_spinning=True), config, 1, "mlp")
    # onnxruntime runs a graph without parallel branches sequentially whatever was asked.
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    got = _session(options)
    assert got.intra_op_num_threads == 1 and got.inter_op_num_threads == 1
    assert got.enable_mem_pattern is False
    assert got.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert got.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with pytest.raises(RuntimeError, match="does not have configuration"):
        got.get_session_config_entry("not_for_onnxruntime")


@pytest.mark.parametrize("key, value, expected", [
    ("intra_op_thread_count", "two", "expected a whole number of threads"),
    ("execution_mode", "2", "expected 0 (sequential) or 1 (parallel)"),
    ("enable_mem_arena", "maybe", "expected 1/true or 0/false"),
])
def test_a_bad_parameter_is_a_load_error_that_names_it(key, value, expected):
    config = models.mlp_config("mlp")
    config.parameters[key].string_value = value
    with pytest.raises(LoadError) as info:
        session_options(RuntimeSettings(), config, 1, "mlp version 3")
    assert info.value.message.startswith(f"mlp version 3: parameter {key} is {value!r}")
    assert expected in info.value.message


def test_an_unknown_graph_level_is_refused():
    config = models.mlp_config("mlp")
    config.optimization.graph.level = 7
    with pytest.raises(LoadError, match="optimization.graph.level 7"):
        session_options(RuntimeSettings(), config, 1, "mlp")
