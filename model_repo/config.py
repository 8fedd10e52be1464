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
