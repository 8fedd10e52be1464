"""Extra files next to model.onnx: a float16 copy and an onnxruntime-optimised copy.

The plain ``model.onnx`` is always kept: the optimised graph holds ``com.microsoft`` ops
only onnxruntime runs, and the fp16 one trades accuracy for size."""

from __future__ import annotations

from pathlib import Path

FP16_FILE = "model_fp16.onnx"
OPTIMIZED_FILE = "model_optimized.onnx"
FP16_ATOL = 1e-3
FP16_RTOL = 1e-2


def to_fp16(model):
    """Weights and compute in float16; inputs and outputs stay float32 for clients."""
    from onnxconverter_common import float16

    return float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)


def optimize(source: Path, target: Path, extensions: bool = False) -> None:
    """onnxruntime's offline optimisation at EXTENDED level (fusions that stay portable across
    onnxruntime execution providers, unlike ALL's CPU-only layout changes)."""
    import onnxruntime as ort

    from .custom_ops import session_options

    options = session_options(extensions)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
