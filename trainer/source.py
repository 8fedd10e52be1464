"""The serving version's trainable original, loaded from the model repository."""

from __future__ import annotations

from dataclasses import dataclass

from model_repo import Manifest, Repository, RepositoryError
from model_repo.canary_state import base_version

from .errors import ModelError


@dataclass
class BaseModel:
    repo: Repository
    name: str
    version: int
    manifest: Manifest

    @property
    def source_path(self):
        return self.repo.version_dir(self.name, self.version) / self.manifest.source["path"]


def resolve_base(repo_root: str, name: str, version: int | None) -> BaseModel:
    """Find the version to fine-tune: the stable one (``model_repo.canary_state``: the
    version policy and the manifests' decisions, as the gateway serves it) unless
    ``version`` is given; a rejected version is refused.

    Cheap (no TensorFlow), so the launcher checks it before starting any rank."""
    repo = Repository(repo_root)
    if not repo.root.is_dir():
        raise ModelError(f"model repository {repo.root} does not exist")
    try:
        number = base_version(repo, name, version)
        manifest = repo.read_manifest(name, number)
    except RepositoryError as exc:
        raise ModelError(str(exc)) from None
    source = manifest.source or {}
    if source.get("format") != "keras" or not source.get("path"):
        raise ModelError(f"{name} version {number} has no trainable Keras source "
                         f"(source: {manifest.source}); only Keras sources can be fine-tuned")
    base = BaseModel(repo, name, number, manifest)
    if not base.source_path.is_file():
        raise ModelError(f"{name} version {number}: source file {base.source_path} is missing")
    return base


def load_keras(base: BaseModel):
    import keras

    try:
        # compile=False: the trainer chooses its own loss and optimizer; a saved optimizer
        # state from the original training is not the fine-tuning state.
        return keras.models.load_model(base.source_path, compile=False)
    except Exception as exc:  # Keras raises a variety of types for unreadable files
        raise ModelError(f"cannot load {base.source_path}: {exc}") from None
