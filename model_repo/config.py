"""``config.pbtxt``: Triton's ModelConfig, read and written with Triton's own schema."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from .datatypes import BY_CONFIG, from_v2
from .durable import atomic_write_bytes
from .errors import ConfigError

ModelConfig = mc.ModelConfig
PLATFORM = "onnxruntime_onnx"
CONFIG_FILE = "config.pbtxt"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output. ``dims`` exclude the batch dimension when the model batches;
    -1 marks a variable dimension."""

    name: str
    datatype: str  # v2 name, e.g. "FP32"
    dims: tuple[int, ...]


def make_config(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    max_batch_size: int = 0,
    dynamic_batching: bool = True,
    max_queue_delay_microseconds: int = 0,
    preferred_batch_sizes: Sequence[int] = (),
    latest_versions: int = 1,
) -> ModelConfig:
    config = ModelConfig(name=name, platform=PLATFORM, max_batch_size=max_batch_size)
    for spec, field in [(s, config.input) for s in inputs] + [(s, config.output) for s in outputs]:
        tensor = field.add()
        tensor.name = spec.name
        tensor.data_type = from_v2(spec.datatype).config
        tensor.dims.extend(spec.dims)
    if dynamic_batching and max_batch_size > 0:
        config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_microseconds
        config.dynamic_batching.preferred_batch_size.extend(preferred_batch_sizes)
    config.version_policy.latest.num_versions = latest_versions
    return config


def parse_config(text: str, source: str = CONFIG_FILE) -> ModelConfig:
    try:
        config = text_format.Parse(text, ModelConfig())
    except text_format.ParseError as exc:
        raise ConfigError(f"{source}: not a valid Triton ModelConfig: {exc}") from None
    check_config(config, source)
    return config


def check_config(config: ModelConfig, source: str = CONFIG_FILE) -> None:
    if config.max_batch_size < 0:
        raise ConfigError(f"{source}: max_batch_size must be >= 0, got {config.max_batch_size}")
    for kind, tensors in (("input", config.input), ("output", config.output)):
        for tensor in tensors:
            if not tensor.name:
                raise ConfigError(f"{source}: an {kind} has no name")
            if tensor.data_type not in BY_CONFIG:
                raise ConfigError(f"{source}: {kind} {tensor.name!r} has unsupported data_type "
                                  f"{mc.DataType.Name(tensor.data_type)}")
            if any(d < -1 or d == 0 for d in tensor.dims):
                raise ConfigError(f"{source}: {kind} {tensor.name!r} has invalid dims {list(tensor.dims)}"
                                  " (each must be -1 or positive)")


def read_config(path: Path) -> ModelConfig:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing") from None
    return parse_config(text, str(path))


def format_config(config: ModelConfig) -> str:
    return text_format.MessageToString(config)


def write_config(path: Path, config: ModelConfig) -> None:
    check_config(config, str(path))
    atomic_write_bytes(path, format_config(config).encode())


def config_to_dict(config: ModelConfig) -> dict:
    """The config as Triton's ``/config`` route returns it: proto field names, enums as
    names, and 64-bit integers as JSON numbers (protobuf's JSON mapping makes them strings)."""
    data = json_format.MessageToDict(config, preserving_proto_field_name=True)
    return _int64_to_numbers(data, config.DESCRIPTOR)


def _int64_to_numbers(data: dict, descriptor) -> dict:
    from google.protobuf.descriptor import FieldDescriptor as F

    ints = {F.TYPE_INT64, F.TYPE_UINT64, F.TYPE_SINT64, F.TYPE_FIXED64, F.TYPE_SFIXED64}
    for key, value in data.items():
        field = descriptor.fields_by_name.get(key)
        if field is None:
            continue
        if field.type in ints:
            data[key] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif field.type == F.TYPE_MESSAGE:
            sub = field.message_type
            if sub.GetOptions().map_entry:
                value_field = sub.fields_by_name["value"]
                if value_field.type == F.TYPE_MESSAGE:
                    for k, v in value.items():
                        value[k] = _int64_to_numbers(v, value_field.message_type)
                elif value_field.type in ints:
                    for k, v in value.items():
                        value[k] = int(v)
            elif isinstance(value, list):
                data[key] = [_int64_to_numbers(v, sub) for v in value]
            else:
                data[key] = _int64_to_numbers(value, sub)
    return data


# ------------------------------------------------- serving features of the config
LABELS_FILE = "labels.txt"  # what the converter names the label file it writes
WARMUP_DIR = "warmup"  # Triton's sub-directory of the model directory for warm-up data files


def response_cache_enabled(config: ModelConfig) -> bool:
    """Triton's ``response_cache { enable: true }``."""
    return config.HasField("response_cache") and config.response_cache.enable


def label_files(config: ModelConfig) -> dict[str, str]:
    """Output name -> its ``label_filename`` (a file in the model's directory)."""
    return {output.name: output.label_filename for output in config.output if output.label_filename}


def _inside(model_dir: Path, relative: str, what: str) -> Path:
    """``model_dir / relative``, refusing anything that would leave the model's directory."""
    path = Path(relative)
    if not relative or path.is_absolute() or ".." in path.parts:
        raise ConfigError(f"{what} {relative!r} must be a relative path inside the model's directory")
    return model_dir / path


def read_labels(model_dir: Path, filename: str) -> list[str]:
    """One label per line, as Triton reads a ``label_filename`` (line i names class i)."""
    path = _inside(model_dir, filename, "label_filename")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"label file {path}: cannot read it: {exc}") from None


def write_labels(model_dir: Path, filename: str, labels: Sequence[str]) -> Path:
    bad = [label for label in labels if "\n" in label or "\r" in label]
    if bad:
        raise ConfigError(f"class names cannot hold line breaks: {bad[0]!r}")
    path = _inside(model_dir, filename, "label_filename")
    atomic_write_bytes(path, "".join(f"{label}\n" for label in labels).encode())
    return path


@dataclass(frozen=True)
class WarmupInput:
    name: str
    datatype: str  # v2 name
    dims: tuple[int, ...]  # one sample's shape, without the batch dimension
    source: str  # "zero", "random" or "file"
    file: Path | None = None  # for "file": raw row-major data (BYTES: 4-byte length + bytes each)


@dataclass(frozen=True)
class WarmupSample:
    name: str
    batch_size: int
    runs: int  # Triton's count; its 0 means once
    inputs: tuple[WarmupInput, ...]


def warmup_samples(config: ModelConfig, model_dir: Path) -> list[WarmupSample]:
    """The config's ``model_warmup`` entries, checked (ConfigError names the sample)."""
    samples = []
    for entry in config.model_warmup:
        what = f"model_warmup {entry.name!r}"
        if not entry.name:
            raise ConfigError("a model_warmup entry has no name")
        if entry.batch_size < 1 or (config.max_batch_size == 0 and entry.batch_size != 1):
            raise ConfigError(f"{what}: batch_size {entry.batch_size} must be 1 for a model that does not "
                              f"batch, else 1 to max_batch_size {config.max_batch_size}")
        if config.max_batch_size and entry.batch_size > config.max_batch_size:
            raise ConfigError(f"{what}: batch_size {entry.batch_size} is over max_batch_size {config.max_batch_size}")
        inputs = []
        for name, spec in sorted(entry.inputs.items()):
            if spec.data_type not in BY_CONFIG:
                raise ConfigError(f"{what}: input {name!r} has unsupported data_type {spec.data_type}")
            which = spec.WhichOneof("input_data_type")
            if which is None:
                raise ConfigError(f"{what}: input {name!r} needs zero_data, random_data or input_data_file")
            source = {"zero_data": "zero", "random_data": "random", "input_data_file": "file"}[which]
            file = (_inside(model_dir / WARMUP_DIR, spec.input_data_file, f"{what}: input_data_file")
                    if source == "file" else None)
            inputs.append(WarmupInput(name, BY_CONFIG[spec.data_type].v2, tuple(spec.dims), source, file))
        samples.append(WarmupSample(entry.name, entry.batch_size, max(entry.count, 1), tuple(inputs)))
    return samples
