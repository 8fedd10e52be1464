"""Writing ONNX files, with external data when a model is too big for one protobuf."""

from __future__ import annotations

from pathlib import Path

# A protobuf message cannot exceed 2 GiB; stay clear of it.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def data_file(path: Path) -> str:
    return f"{path.name}.data"


def save_model(model, path: Path, *, threshold: int | None = None) -> bool:
    """Saves ``model``; tensors go to ``<name>.data`` beside it (memory-mappable by onnxruntime)
    when the model is over ``threshold`` bytes. Returns whether external data was used."""
    import onnx

    external = _size(model) > (EXTERNAL_DATA_THRESHOLD if threshold is None else threshold)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_file(path), size_threshold=1024)
    else:
        onnx.save_model(model, str(path))
    return external


def _size(model) -> int:
    # ByteSize() itself fails past 2 GiB; summing initializers is what matters and never does.
    total = sum(len(t.raw_data) for t in model.graph.initializer)
    try:
        return max(total, model.ByteSize())
    except ValueError:
        return total
