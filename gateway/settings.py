"""Settings: one typed object for the server, one for each model's runtime.

Precedence, highest first: keyword arguments (the CLI flags), ``TUNEGATE_*`` environment
variables (nested fields with ``__``, e.g. ``TUNEGATE_RUNTIME__PROVIDER=cpu``), the
``--config`` file (TOML or JSON; YAML when PyYAML is installed), then the defaults below.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from .core.errors import GatewayError
from .core.tracing_settings import TracingSettings
from .loop.settings import LeaderSettings, LoopSettings
from .settings_errors import Sources, describe

GiB = 1 << 30
MiB = 1 << 20
KiB = 1 << 10


class TritonSettings(BaseModel):
    """Forwarding a model to a fleet of Triton servers (``RuntimeSettings.kind = "triton"``)."""

    model_config = ConfigDict(extra="forbid")

    endpoints: list[str] = []
    """Triton endpoints: ``host:port`` or ``http://host:port`` for Triton's HTTP service,
    ``grpc://host:port`` for its gRPC service; one list may mix both. Requests go to the
    healthy one with the fewest requests in flight."""

    model_name: str | None = None
    """The model's name in Triton; None: the same name as in the gateway."""

    request_timeout_seconds: float = Field(30.0, gt=0)
    """Longest wait for Triton's answer; a timed-out request is answered 504, never retried."""

    retries: int = Field(2, ge=0)
    """Further endpoints to try when one cannot be connected to (no request byte sent)."""

    failure_threshold: int = Field(3, ge=1)
    """Transport failures in a row that open an endpoint's circuit (no traffic until a
    readiness probe succeeds)."""

    health_interval_seconds: float = Field(2.0, gt=0)
    """How often every endpoint's ``/v2/health/ready`` is probed."""

    probe_timeout_seconds: float = Field(2.0, gt=0)
    """Longest wait for one readiness probe."""

    ready_timeout_seconds: float = Field(60.0, ge=0)
    """How long loading a version waits for some endpoint to serve it (Triton may poll its
    repository later than the gateway)."""

    max_outstanding: int = Field(64, ge=1)
    """Requests in flight per endpoint (its connection pool size)."""

    gateway_batching: bool = False
    """Merge requests in the gateway too. Off by default: Triton batches, and batching twice
    only adds delay."""


class RuntimeSettings(BaseModel):
    """How one model's versions run on onnxruntime (or, with ``kind="triton"``, where
    they are forwarded). ``Settings.runtime`` is the default;
    ``Settings.models[name]`` overrides fields for one model; an ``instance_group`` count
    in the model's ``config.pbtxt`` overrides ``instance_count``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["onnxruntime", "triton"] = "onnxruntime"
    """``onnxruntime``: run the version in this process. ``triton``: forward its requests to
    the Triton servers in ``triton`` (metadata and config then come from Triton)."""

    triton: TritonSettings = TritonSettings()
    """Where and how a ``kind="triton"`` model is forwarded."""

    provider: Literal["auto", "cuda", "cpu"] = "auto"
    """``auto``: CUDA when onnxruntime has it and the device has at least
    ``min_gpu_memory``, else CPU (the reason is logged). ``cuda``: CUDA or fail the load.
    ``cpu``: CPU only."""

    device_id: int = Field(0, ge=0)
    """CUDA device ordinal."""

    min_gpu_memory: ByteSize = ByteSize(2 * GiB)
    """A GPU with less total memory is not fit for serving (the chapter's 2 GB rule):
    ``auto`` falls back to CPU, ``cuda`` refuses to load. 0 disables the rule."""

    gpu_mem_limit: ByteSize | None = None
    """Cap on the CUDA arena of each session (onnxruntime ``gpu_mem_limit``); None: no cap."""

    arena_extend_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] = "kNextPowerOfTwo"
    """How the CUDA arena grows; ``kSameAsRequested`` keeps memory tight under a limit."""

    intra_op_threads: int = Field(0, ge=0)
    """Threads inside one operator; 0: onnxruntime's default (one per physical core) for a
    single instance, the cores shared out between instances when there are several."""

    inter_op_threads: int = Field(0, ge=0)
    """Threads across independent operators (parallel execution mode only); 0: default."""

    intra_op_spinning: bool = True
    """Let idle intra-op threads spin for work (onnxruntime's default). Measured on 2 cores
    (MobileNetV2 96x96, tritonclient at concurrency 8/32/64): on, 530/525/549 samples/s;
    off, 258/406/483, as every small parallel op then waits for threads to wake. Turn it
    off when other busy processes share the cores."""

    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    """onnxruntime graph optimisations applied when the session is created."""

    cpu_arena: bool = True
    """onnxruntime's CPU memory arena: faster reuse of buffers, at the price of memory
    that is not returned to the system."""

    instance_count: int = Field(1, ge=1, le=64)
    """Concurrent session runs per loaded version (the size of its bounded executor)."""

    warmup: bool = True
    """Run each new version once per preferred batch size before it takes traffic."""


class Settings(BaseSettings):
    """The gateway server. Load it with :func:`load_settings` to honour a config file."""

    model_config = SettingsConfigDict(env_prefix="TUNEGATE_", env_nested_delimiter="__", extra="forbid")

    repo: Path = Path("model_repository")
    """The model repository to serve (Triton layout, see model_repo)."""

    host: str = "127.0.0.1"
    """Address to listen on; 0.0.0.0 to serve beyond this machine."""

    port: int = Field(8000, ge=0, le=65535)
    """TCP port; 0 picks a free one."""

    grpc_port: int = Field(8001, ge=0, le=65535)
    """Port of the gRPC front end (Triton's ``inference.GRPCInferenceService``), on ``host``;
    0 turns it off."""

    allow_shared_memory: bool = False
    """Triton's system shared-memory extension (like Triton's ``--allow-client-shm``): clients
    on this host may register regions that inputs are read from and outputs written to."""

    max_body_bytes: ByteSize = ByteSize(64 * MiB)
    """Largest request body accepted (after decompression); larger ones get 413."""

    max_elements: int = Field(1 << 26, ge=1)
    """Largest element count of one input tensor: a sanity check before any allocation."""

    decode_budget_bytes: ByteSize = ByteSize(1 * GiB)
    """Memory that the requests being read and decoded at one time may claim together (their
    bodies and the arrays built from them). A request that would take the total over it is
    answered 503 at once, with a message saying so, instead of growing the process."""

    response_cache_bytes: ByteSize = ByteSize(0)
    """Size of the response cache (Triton's ``--cache-config local,size=``) shared by the models
    whose config.pbtxt has ``response_cache { enable: true }``; least recently used answers go
    first. 0: no cache (as in Triton, those models then run every request)."""

    max_queue_size: int = Field(1024, ge=1)
    """Queue bound for a model whose config.pbtxt sets none (Triton's 0 means unbounded;
    tunegate never queues without bound)."""

    model_control: Literal["poll", "explicit", "none"] = "poll"
    """``poll``: load every model at start and follow the repository (hot reload);
    ``explicit``: load only ``load_models`` at start, then only through the repository
    API; ``none``: load every model at start and never change."""

    load_models: list[str] = []
    """Models to load at start in ``explicit`` mode."""

    poll_interval_seconds: float = Field(2.0, gt=0)
    """How often the repository is scanned in ``poll`` mode."""

    strict_readiness: bool = True
    """Triton's rule: ``/v2/health/ready`` answers 200 only when every model that should be
    loaded has a ready version. Off: ready once the initial load has finished."""

    exit_on_error: bool = False
    """Exit at start-up (status 1) when a model fails its initial load, instead of serving
    the others."""

    exit_timeout_seconds: float = Field(30.0, ge=0)
    """On shutdown, how long in-flight requests may take to finish before they are cut."""

    api_key: SecretStr | None = None
    """When set, repository control routes (load/unload) require it in ``api_key_header``
    (or as ``Authorization: Bearer <key>``)."""

    api_key_header: str = "X-API-Key"
    """Header that carries the API key."""

    codec_offload_bytes: int = Field(256 * KiB, ge=0)
    """Bodies at least this large are decoded and encoded in a worker thread, so a big
    JSON request never stalls the event loop (256 KiB: measured on a 560 KB MobileNetV2
    JSON body at c=8, 1.6-1.9x the throughput and half the p50 of 1 MiB, at no more CPU)."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of the ``tunegate`` and ``aiohttp.access`` loggers."""

    access_log: bool = False
    """One log line per request, with its request id (off by default, as in Triton: a line
    per request costs every request a formatted write)."""

    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    """The event loop ``tunegate serve`` runs on: uvloop (libuv), or the standard library's."""

    tracing: TracingSettings = TracingSettings()
    """OpenTelemetry traces of inference requests (off unless ``tracing.endpoint`` is set);
    Triton's trace extension changes their sampling at run time."""

    runtime: RuntimeSettings = RuntimeSettings()
    """Default runtime settings for every model."""

    models: dict[str, RuntimeSettings] = {}
    """Per-model runtime overrides, by model name (only the fields given are changed)."""

    loop: LoopSettings = LoopSettings()
    """Feedback, fine-tune jobs and canaries: defaults for every model (see loop_settings)."""

    loop_models: dict[str, LoopSettings] = {}
    """Per-model loop overrides, by model name (only the fields given are changed)."""

    leader: LeaderSettings = LeaderSettings()
    """How the one process that runs the loop is elected among workers and replicas."""

    workers: int = Field(1, ge=1, le=256)
    """Serving processes ``tunegate serve`` starts, sharing the HTTP and gRPC ports
    (SO_REUSEPORT), each with its own sessions and batcher (docs/guides/scale-out.md)."""

    def loop_for(self, model: str) -> LoopSettings:
        override = self.loop_models.get(model)
        if override is None:
            return self.loop
        return self.loop.model_copy(update=override.model_dump(exclude_unset=True))

    def runtime_for(self, model: str) -> RuntimeSettings:
        override = self.models.get(model)
        if override is None:
            return self.runtime
        # Validated, and merged field by field into nested tables (``triton``), so an override
        # of one nested field keeps the defaults' others.
        return RuntimeSettings.model_validate(_merge(self.runtime.model_dump(),
                                                     override.model_dump(exclude_unset=True)))


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


class ConfigFileError(GatewayError):
    """Settings that cannot be read or are not valid: one line of the message per problem."""

    exit_code = 2

    @classmethod
    def from_validation(cls, exc: ValueError, flags: dict[str, Any], file_values: dict[str, Any],
                        config_file: str | Path | None) -> ConfigFileError:
        config = Settings.model_config
        sources = Sources(flags, config.get("env_prefix", ""), config.get("env_nested_delimiter") or "__",
                          file_values, config_file)
        return cls("\n".join(describe(exc, sources, Settings)))


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc}") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            try:
                import yaml  # optional: only when the user chose a YAML file
            except ImportError:
                raise ConfigFileError(f"{path}: YAML needs PyYAML; use TOML or JSON") from None
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigFileError(f"{path}: unknown config format; use .toml, .json or .yaml")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise ConfigFileError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: expected a table/object at the top level")
    return data


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``overrides`` > environment > ``config_file`` > defaults."""
    file_values = read_config_file(config_file) if config_file else {}
    overrides = {k: v for k, v in overrides.items() if v is not None}

    class _WithFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, env_settings, InitSettingsSource(settings_cls, file_values)

    try:
        loaded = _WithFile(**overrides)
    except ValueError as exc:  # pydantic's ValidationError, or pydantic-settings' SettingsError
        raise ConfigFileError.from_validation(exc, overrides, file_values, config_file) from None
    # Hand back a plain Settings (the subclass only existed to order the sources).
    return Settings.model_construct(**{name: getattr(loaded, name) for name in Settings.model_fields},
                                    _fields_set=loaded.model_fields_set)
