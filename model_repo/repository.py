"""The on-disk model repository (Triton's layout plus tunegate's manifests).

::

    <root>/<model>/config.pbtxt
    <root>/<model>/<version>/model.onnx
    <root>/<model>/<version>/source/
    <root>/<model>/<version>/manifest.json

A version appears only complete: it is built in a hidden staging directory inside the
model's directory (same file system, and ignored by Triton, which only loads numeric
directories), fsynced, then renamed to the next free number under a per-model file lock.
Removal renames the version out of sight before deleting it, so no reader sees half of one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from .config import CONFIG_FILE, ModelConfig, read_config, write_config
from .durable import atomic_write_json, exclusive_lock, fsync_path, fsync_tree
from .errors import IntegrityError, ManifestError, ModelNotFound, PublishError, Superseded, VersionNotFound
from .manifest import MANIFEST_FILE, MODEL_FILE, Manifest, digest_tree, read_manifest, sha256_file
from .names import check_model_name, inside, parse_version
from .policy import available_versions

_HIGH_WATER_FILE = ".last-version"  # numbers are never reused, even after removal
_STAGING_PREFIX = ".staging-"
_TRASH_PREFIX = ".removing-"


class Repository:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()

    def __repr__(self) -> str:
        return f"Repository({str(self.root)!r})"

    # ----------------------------------------------------------------- reading
    def model_dir(self, model: str) -> Path:
        check_model_name(model)
        path = self.root / model
        inside(self.root, path)
        return path

    def version_dir(self, model: str, version: int | str) -> Path:
        path = self.model_dir(model) / str(parse_version(version))
        inside(self.root, path)
        return path

    def list_models(self) -> list[str]:
        """Models with a ``config.pbtxt``; a directory without one is not (yet) a model."""
        if not self.root.is_dir():
            return []
        names = []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            if (Path(entry.path) / CONFIG_FILE).is_file():
                names.append(entry.name)
        return names

    def has_model(self, model: str) -> bool:
        return (self.model_dir(model) / CONFIG_FILE).is_file()

    def _require_model(self, model: str) -> Path:
        path = self.model_dir(model)
        if not (path / CONFIG_FILE).is_file():
            raise ModelNotFound(f"unknown model {model!r} in repository {self.root}")
        return path

    def list_versions(self, model: str) -> list[int]:
        """All complete version directories, ascending (whatever the version policy says)."""
        path = self._require_model(model)
        versions = []
        for entry in os.scandir(path):
            if entry.name.isdigit() and not entry.name.startswith("0") and entry.is_dir(follow_symlinks=False):
                versions.append(int(entry.name))
        return sorted(versions)

    def read_config(self, model: str) -> ModelConfig:
        return read_config(self._require_model(model) / CONFIG_FILE)

    def write_config(self, model: str, config: ModelConfig) -> None:
        with self._locked(model):
            write_config(self.model_dir(model) / CONFIG_FILE, config)

    def read_manifest(self, model: str, version: int | str) -> Manifest:
        return read_manifest(self._existing_version(model, version) / MANIFEST_FILE)

    def update_manifest(self, model: str, version: int | str, **changes: object) -> Manifest:
        """Change fields of a published manifest (e.g. ``status="rejected"``) atomically."""
        updated = self.update_manifest_if(model, version, lambda _: True, **changes)
        assert updated is not None
        return updated

    def update_manifest_if(self, model: str, version: int | str, condition: Callable[[Manifest], bool],
                           **changes: object) -> Manifest | None:
        """Like :meth:`update_manifest`, but only when ``condition`` holds for the manifest as
        it is under the lock (None when it does not): two deciders of one canary, the CLI
        and a gateway, can never both write."""
        path = self._existing_version(model, version)
        with self._locked(model):
            manifest = read_manifest(path / MANIFEST_FILE)
            if not condition(manifest):
                return None
            for key, value in changes.items():
                if key in Manifest.__dataclass_fields__:
                    setattr(manifest, key, value)
                else:
                    manifest.extra[key] = value
            atomic_write_json(path / MANIFEST_FILE, manifest.to_dict())
        return manifest

    def model_path(self, model: str, version: int | str, filename: str = MODEL_FILE) -> Path:
        return self._existing_version(model, version) / filename

    def available_versions(self, model: str) -> list[int]:
        return available_versions(self.read_config(model), self.list_versions(model))

    def resolve(self, model: str, version: int | str | None = None) -> int:
        """The version a request for ``model`` (and optionally ``version``) is served by:
        the newest available one under the model's version policy, or the one asked for
        if the policy makes it available."""
        available = self.available_versions(model)
        if version is None or version == "":
            if not available:
                raise VersionNotFound(f"model {model!r} has no version available to serve")
            return available[-1]
        number = parse_version(version)
        if number not in available:
            present = self.list_versions(model)
            why = "does not exist" if number not in present else "is not available under the version policy"
            raise VersionNotFound(f"version {number} of model {model!r} {why}; available: {available}")
        return number

    def _existing_version(self, model: str, version: int | str) -> Path:
        path = self.version_dir(model, version)
        self._require_model(model)
        if not path.is_dir():
            raise VersionNotFound(f"model {model!r} has no version {version}")
        return path

    # ---------------------------------------------------------------- checking
    def verify(self, model: str, version: int | str) -> Manifest:
        """Recompute every file's sha256 and compare with the manifest."""
        path = self._existing_version(model, version)
        manifest = read_manifest(path / MANIFEST_FILE)
        actual = digest_tree(path)
        expected = dict(manifest.files) or {MODEL_FILE: manifest.sha256}
        expected.setdefault(MODEL_FILE, manifest.sha256)
        problems = []
        for rel, digest in sorted(expected.items()):
            if rel not in actual:
                problems.append(f"{rel} is missing")
            elif actual[rel] != digest:
                problems.append(f"{rel} has sha256 {actual[rel][:12]}…, manifest says {digest[:12]}…")
        if problems:
            raise IntegrityError(f"{model} version {manifest.version}: " + "; ".join(problems))
        return manifest

    # -------------------------------------------------------------- publishing
    @contextlib.contextmanager
    def staging(self, model: str) -> Iterator[Path]:
        """A fresh hidden directory to build a version in; removed afterwards unless
        published. Same file system as the repository, so publishing is a rename."""
        model_path = self.model_dir(model)
        model_path.mkdir(parents=True, exist_ok=True)
        path = model_path / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
        path.mkdir()
        try:
            yield path
        finally:
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)

    def publish(
        self,
        model: str,
        staged: Path,
        *,
        config: ModelConfig | None = None,
        replace_config: bool = False,
        parent_version: int | None = None,
        **manifest_fields: object,
    ) -> Manifest:
        """Publish the staged directory as the model's next version, atomically.

        ``staged`` must hold ``model.onnx``. The manifest is written with the digests of
        every file. ``config`` becomes the model's ``config.pbtxt`` if it has none yet (or
        always, with ``replace_config``); an operator's edits to an existing one are kept.

        A fine-tuned version (``training`` among the fields) is a compare-and-set on its
        parent: if a version fine-tuned from the same parent is there and not rejected,
        another job got there first and :class:`Superseded` is raised, nothing published
        (two jobs from one base, say a command line's and a gateway's, never both publish).
        """
        model_path = self.model_dir(model)
        staged = Path(staged)
        if staged.parent != model_path or not staged.name.startswith(_STAGING_PREFIX):
            raise PublishError(f"{staged} was not made by Repository.staging({model!r})")
        if not (staged / MODEL_FILE).is_file():
            raise PublishError(f"{staged} has no {MODEL_FILE}")
        config_path = model_path / CONFIG_FILE
        if config is None and not config_path.is_file():
            raise PublishError(f"model {model!r} has no {CONFIG_FILE} and none was given")
        if config is not None and config.name != model:
            config.name = model

        fields = {k: v for k, v in manifest_fields.items() if k in Manifest.__dataclass_fields__}
        extra = {k: v for k, v in manifest_fields.items() if k not in Manifest.__dataclass_fields__}
        with self._locked(model):
            if "training" in manifest_fields and parent_version is not None:
                self._check_no_sibling(model, parent_version)
            version = self._next_version(model_path)
            manifest = Manifest(
                model=model,
                version=version,
                created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                sha256=sha256_file(staged / MODEL_FILE),
                files=digest_tree(staged),
                parent_version=parent_version,
                **fields,
            )
            manifest.extra.update(extra)
            atomic_write_json(staged / MANIFEST_FILE, manifest.to_dict())
            fsync_tree(staged)
            if config is not None and (replace_config or not config_path.is_file()):
                write_config(config_path, config)
            target = model_path / str(version)
            try:
                os.rename(staged, target)
            except OSError as exc:
                raise PublishError(f"could not publish {model} version {version}: {exc}") from exc
            (model_path / _HIGH_WATER_FILE).write_text(f"{version}\n")
            fsync_path(model_path / _HIGH_WATER_FILE)
            fsync_path(model_path)
        return manifest

    def _check_no_sibling(self, model: str, parent: int) -> None:
        for version in reversed(self.list_versions(model)):
            if version <= parent:
                break
            try:
                other = self.read_manifest(model, version)
            except (ManifestError, VersionNotFound):
                continue
            if other.extra.get("training") and other.parent_version == parent and other.status != "rejected":
                raise Superseded(f"{model} version {version} was already fine-tuned from version {parent} "
                                 f"(and is not rejected): nothing published; fine-tune the stable version")

    def _next_version(self, model_path: Path) -> int:
        numbers = [int(e.name) for e in os.scandir(model_path) if e.name.isdigit()]
        try:
            numbers.append(int((model_path / _HIGH_WATER_FILE).read_text().strip()))
        except (FileNotFoundError, ValueError):
            pass
        return max(numbers, default=0) + 1

    def _locked(self, model: str) -> contextlib.AbstractContextManager[None]:
        return exclusive_lock(self.model_dir(model))

    # ---------------------------------------------------------------- removing
    def remove_version(self, model: str, version: int | str) -> None:
        path = self._existing_version(model, version)
        with self._locked(model):
            trash = path.parent / f"{_TRASH_PREFIX}{path.name}-{uuid.uuid4().hex}"
            os.rename(path, trash)
            fsync_path(path.parent)
        shutil.rmtree(trash)

    def retain(self, model: str, keep_last: int) -> list[int]:
        """Keep the newest ``keep_last`` versions; remove and return the others."""
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        doomed = self.list_versions(model)[:-keep_last]
        for version in doomed:
            self.remove_version(model, version)
        return doomed
