"""``--class-names``: Keras class names as Triton's ``label_filename`` of the output that
scores them, so the classification extension answers ``value:index:label``."""

from __future__ import annotations

from pathlib import Path

from model_repo import ModelConfig
from model_repo.config import LABELS_FILE, write_labels
from model_repo.errors import ConfigError

from .errors import SourceError


def parse_class_names(text: str) -> list[str]:
    """A file with one name per line, or the names separated by commas."""
    path = Path(text)
    if path.is_file():
        try:
            names = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise SourceError(f"--class-names {path}: cannot read it: {exc}") from None
    else:
        names = [name.strip() for name in text.split(",")]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise SourceError(f"--class-names {text!r}: no names (give a file, one name per line, or a,b,c)")
    return names


def attach_labels(config: ModelConfig, model_dir: Path, names: list[str]) -> str:
    """Write the label file and name it in the output with one score per class; the output's name."""
    matches = [o for o in config.output if list(o.dims[-1:]) == [len(names)]]
    if len(matches) != 1:
        shapes = ", ".join(f"{o.name} {list(o.dims)}" for o in config.output)
        raise SourceError(f"--class-names gives {len(names)} names: expected exactly one output with "
                          f"{len(names)} scores in its last dimension, the model has {shapes}")
    output = matches[0]
    try:
        write_labels(model_dir, LABELS_FILE, names)
    except ConfigError as exc:
        raise SourceError(f"--class-names: {exc.message}") from None
    output.label_filename = LABELS_FILE
    return output.name
