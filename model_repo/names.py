"""Validation of model and version names.

Model names become directory names in the repository and path segments in URLs, so
they are restricted to what Triton accepts in practice and can never escape the
repository: no separators, no ``.``/``..``, no leading dot (hidden entries are ours).
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import InvalidName, VersionNotFound

_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
_VERSION = re.compile(r"[1-9][0-9]{0,17}")


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name) or name.strip(".") == "":
        raise InvalidName(
            f"invalid model name {name!r}: expected 1-128 characters of letters, digits, "
            "'_', '-' and '.', not starting with '.' or '-' and without path separators"
        )
    return name


def parse_version(version: str | int) -> int:
    """A version is a positive decimal integer, as Triton numbers version directories."""
    text = str(version)
    if not _VERSION.fullmatch(text):
        raise VersionNotFound(f"invalid version {version!r}: expected a positive integer such as 1")
    return int(text)


def inside(root: Path, path: Path) -> Path:
    """Resolve ``path`` and refuse it if it (or a symlink on the way) leaves ``root``."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise InvalidName(f"{path} resolves to {resolved}, outside the repository {root}")
    return resolved
