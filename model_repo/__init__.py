"""The on-disk model repository: Triton's layout, atomic versions, manifests, a watcher.

Imports nothing from the rest of tunegate; the gateway, converters and trainer import it.
"""

from .canary_state import PROMOTED, REJECTED, ROLLED_BACK, ServingPlan, is_pending, plan_versions, read_plan
from .config import CONFIG_FILE, ModelConfig, TensorSpec, config_to_dict, make_config, parse_config
from .errors import (
    ConfigError,
    IntegrityError,
    InvalidName,
    ManifestError,
    ModelNotFound,
    PublishError,
    RepositoryError,
    VersionNotFound,
)
from .manifest import MANIFEST_FILE, MODEL_FILE, SOURCE_DIR, Manifest
from .names import check_model_name, parse_version
from .repository import Repository
from .watch import Change, RepoEvent, RepositoryWatcher

__all__ = [
    "CONFIG_FILE", "MANIFEST_FILE", "MODEL_FILE", "SOURCE_DIR",
    "Change", "ConfigError", "IntegrityError", "InvalidName", "Manifest", "ManifestError",
    "ModelConfig", "ModelNotFound", "PROMOTED", "PublishError", "REJECTED", "ROLLED_BACK", "RepoEvent",
    "Repository", "RepositoryError", "RepositoryWatcher", "ServingPlan", "TensorSpec", "VersionNotFound",
    "check_model_name", "config_to_dict", "is_pending", "make_config", "parse_config", "parse_version",
    "plan_versions", "read_plan",
]
