"""``manifest.json``: a version's lineage, metrics, parity report and file digests."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ManifestError

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
SOURCE_DIR = "source"


@dataclass
class Manifest:
    model: str
    version: int
    created_at: str  # ISO 8601, UTC
    sha256: str  # of model.onnx
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256, all but the manifest
    parent_version: int | None = None
    status: str = "ready"  # "ready" | "rejected" (a canary that was rolled back)
    source: dict[str, Any] | None = None  # {"format": "keras" | "saved_model", "path": "source/..."}
    parity: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    data_digest: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = MANIFEST_FILE) -> Manifest:
        known = {f for f in cls.__dataclass_fields__}
        missing = {"model", "version", "created_at", "sha256"} - data.keys()
        if missing:
            raise ManifestError(f"{where}: missing fields {sorted(missing)}")
        extra = dict(data.get("extra") or {})
        extra.update({k: v for k, v in data.items() if k not in known})
        return cls(**{k: v for k, v in data.items() if k in known and k != "extra"}, extra=extra)


def read_manifest(path: Path) -> Manifest:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: missing") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    return Manifest.from_dict(data, str(path))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def digest_tree(root: Path) -> dict[str, str]:
    """sha256 of every regular file under ``root`` except the manifest, by relative path."""
    return {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.relative_to(root) != Path(MANIFEST_FILE)
    }
