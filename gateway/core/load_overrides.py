"""Triton's load with overrides (``parameters.config``, ``parameters["file:<path>"]``),
mapped to the repository's own safe path.

Triton loads a client's override directory in place of the model's; tunegate never serves
from a directory a client wrote into. A file override is staged (``Repository.staging``),
checked the way a served version is (onnxruntime loads it under the override's config, the
config matches the model, warm-up runs), then published as the model's next version with a
manifest (``Repository.publish``): it appears complete or not at all. The version number in
the paths (``file:1/model.onnx``) only names the override's one version directory; the
version it becomes is the next free number, as for every publish. A config-only override is
checked against every version it would serve, then written as ``config.pbtxt`` atomically.
The caller reloads the model afterwards, as Triton reloads with the new config.

File contents are bytes (gRPC's ``bytes_param``) or base64 text (HTTP, whose JSON has no
bytes). Every refusal is a 4xx that leaves the repository as it was.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import json_format
from model_repo import CONFIG_FILE, MANIFEST_FILE, MODEL_FILE, ModelConfig, Repository
from model_repo.config import PLATFORM, check_config
from model_repo.durable import LOCK_FILE
from model_repo.policy import available_versions

from ..runtime.onnx import OnnxRuntime
from ..settings import Settings
from .errors import BadRequest, LoadError, ModelNotFound, brief

CONFIG_KEY = "config"
FILE_PREFIX = "file:"
MAX_FILES = 1000  # a model directory, not an archive
_VERSION_DIR = re.compile(r"[1-9][0-9]{0,17}")


@dataclass(frozen=True)
class Overrides:
    config: ModelConfig | None = None
    files: dict[str, bytes] = field(default_factory=dict)  # path inside the version directory -> content
    version_dir: str | None = None  # the override's version directory name, as the client sent it

    @property
    def empty(self) -> bool:
        return self.config is None and not self.files


def parse_overrides(model: str, parameters: dict[str, object]) -> Overrides:
    """The overrides among a load request's parameters (others are ignored, as in Triton),
    checked completely before anything is written. Their size is bounded by the transport:
    the HTTP body and the gRPC message are at most ``max_body_bytes``."""
    config = _config(model, parameters[CONFIG_KEY]) if CONFIG_KEY in parameters else None
    files: dict[str, bytes] = {}
    version_dirs: set[str] = set()
    for key, value in parameters.items():
        if not key.startswith(FILE_PREFIX):
            continue
        if len(files) >= MAX_FILES:
            raise BadRequest(f"a load override holds at most {MAX_FILES} files")
        version_dir, inner = _file_path(key)
        version_dirs.add(version_dir)
        files[inner] = _content(key, value)
    if not files:
        return Overrides(config)
    if len(version_dirs) > 1:
        raise BadRequest(f"a load override publishes one version; its files name {sorted(version_dirs)}")
    if config is None:
        raise BadRequest("a file override needs the 'config' parameter too (as in Triton)")
    if MODEL_FILE not in files:
        raise BadRequest(f"a file override needs file:<version>/{MODEL_FILE}; it has {sorted(files)}")
    return Overrides(config, files, version_dirs.pop())


def _config(model: str, value: object) -> ModelConfig:
    if not isinstance(value, str):
        raise BadRequest(f"load parameter 'config' must be a JSON string of a model config, got {brief(value)}")
    try:
        config = json_format.Parse(value, ModelConfig())
    except json_format.ParseError as exc:
        raise BadRequest(f"load parameter 'config' is not a Triton ModelConfig: {exc}") from None
    if config.name and config.name != model:
        raise BadRequest(f"load parameter 'config' names model {config.name!r}, not {model!r}")
    if config.platform not in ("", PLATFORM) or config.backend not in ("", "onnxruntime"):
        raise BadRequest(f"load parameter 'config': only {PLATFORM} models can be served here, got "
                         f"platform {config.platform!r} backend {config.backend!r}")
    config.name = model
    if not config.backend:
        config.platform = PLATFORM
    check_config(config, "load parameter 'config'")  # ConfigError: 400
    return config


def _file_path(key: str) -> tuple[str, str]:
    """(version directory, path inside it) of a ``file:`` key, confined to that directory."""
    raw = key[len(FILE_PREFIX):]
    parts = raw.split("/")
    if (not raw or raw.startswith("/") or "\\" in raw or "\x00" in raw or len(parts) < 2
            or any(p in ("", ".", "..") or p.startswith(".") for p in parts)):
        raise BadRequest(f"override path {brief(raw)} must be <version>/<relative path> inside the model "
                         "directory (no absolute paths, '..', empty or hidden parts)")
    if not _VERSION_DIR.fullmatch(parts[0]):
        raise BadRequest(f"override path {brief(raw)} must start with a version directory such as 1/")
    inner = "/".join(parts[1:])
    if inner == MANIFEST_FILE:
        raise BadRequest(f"override path {brief(raw)}: {MANIFEST_FILE} is written by the repository")
    return parts[0], inner


def _content(key: str, value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"load parameter {brief(key)} is not valid base64") from None
    raise BadRequest(f"load parameter {brief(key)} must be the file's content (base64 text or bytes), "
                     f"got {brief(value)}")


# ------------------------------------------------------------------ applying
async def apply_overrides(repo: Repository, settings: Settings, model: str, overrides: Overrides) -> int | None:
    """Publish a file override as a new version (its number), or write a config override;
    the caller reloads the model."""
    if overrides.files:
        return await _publish(repo, settings, model, overrides)
    assert overrides.config is not None
    config = overrides.config
    if not await asyncio.to_thread(repo.has_model, model):
        raise ModelNotFound(f"unknown model {model!r}: a config override needs a model in the repository")
    versions = available_versions(config, await asyncio.to_thread(repo.list_versions, model))
    if not versions:
        raise BadRequest(f"load parameter 'config': its version policy leaves model {model!r} no version to serve")
    for version in versions:
        path = await asyncio.to_thread(repo.model_path, model, version)
        await check_model(settings, model, version, config, path)
    await asyncio.to_thread(repo.write_config, model, config)
    return None


async def _publish(repo: Repository, settings: Settings, model: str, overrides: Overrides) -> int:
    config = overrides.config
    assert config is not None
    model_dir = repo.model_dir(model)
    existed = await asyncio.to_thread(model_dir.exists)
    with contextlib.ExitStack() as stack:
        try:
            staged = await asyncio.to_thread(stack.enter_context, repo.staging(model))
            await asyncio.to_thread(_write_files, staged, overrides.files)
            await check_model(settings, model, None, config, staged / MODEL_FILE)
            versions = await asyncio.to_thread(_versions, repo, model)
            manifest = await asyncio.to_thread(
                repo.publish, model, staged, config=config, replace_config=True,
                parent_version=versions[-1] if versions else None,
                load_override={"version_dir": overrides.version_dir, "files": sorted(overrides.files)})
            return manifest.version
        finally:
            await asyncio.to_thread(stack.close)  # removes what was staged unless it was published
            if not existed:
                await asyncio.to_thread(_remove_if_not_a_model, model_dir)


def _write_files(staged: Path, files: dict[str, bytes]) -> None:
    for inner, content in files.items():
        path = staged / inner
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "xb") as f:  # x: never through a link or over another file
                f.write(content)
        except OSError as exc:  # a name too long, or a file where another needs a directory
            raise BadRequest(f"override file {brief(inner)} cannot be written: {exc.strerror}") from None


def _versions(repo: Repository, model: str) -> list[int]:
    return repo.list_versions(model) if repo.has_model(model) else []


def _remove_if_not_a_model(model_dir: Path) -> None:
    """A refused override of a new model leaves no directory behind."""
    if (model_dir / CONFIG_FILE).exists():
        return
    with contextlib.suppress(OSError):
        (model_dir / LOCK_FILE).unlink(missing_ok=True)
        os.rmdir(model_dir)


async def check_model(settings: Settings, model: str, version: int | None, config: ModelConfig,
                      path: Path) -> None:
    """Load ``path`` (``version``, or the override's model: None) under ``config`` as the
    gateway serves a version (its I/O checked against the config, warm-up run), on one CPU
    thread, then drop it: a LoadError (400) if it fails."""
    checked = ModelConfig()
    checked.CopyFrom(config)
    del checked.instance_group[:]  # one session on one thread is enough to check
    runtime_settings = settings.runtime_for(model).model_copy(
        update={"provider": "cpu", "instance_count": 1, "warmup": True})
    runtime = OnnxRuntime(model, version or 0, checked, runtime_settings, path)
    try:
        await runtime.load()
    except Exception as exc:
        reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        reason = reason.removeprefix(f"{model} version {version or 0}: ")  # the runtime's own prefix
        what = "the override's model" if version is None else f"version {version}"
        raise LoadError(f"load override of model {model!r} refused: {what} does not load under the given "
                        f"config: {reason}") from None
    finally:
        await runtime.unload()
