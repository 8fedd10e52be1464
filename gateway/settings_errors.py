"""Settings that fail validation, told the way an operator can act on: one line per problem
naming the setting, the value given, where it came from (command-line flag, environment
variable or config file) and what is allowed.

pydantic's own report names an internal class and a documentation URL, and cannot know
which of the three sources a value came from; :func:`describe` works that out by looking
the setting's path up in each source in order of precedence.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

_MISSING = object()


@dataclass(frozen=True)
class Sources:
    """What each source gave, highest precedence first."""

    flags: Mapping[str, Any]
    env_prefix: str
    env_delimiter: str
    file_values: Mapping[str, Any]
    file_path: str | Path | None
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)


def describe(exc: ValueError, sources: Sources, root: type[BaseModel]) -> list[str]:
    """One line per problem in ``exc`` (a pydantic ``ValidationError`` or pydantic-settings'
    ``SettingsError``, which is raised when an environment variable is not valid JSON)."""
    if isinstance(exc, ValidationError):
        return [_line(error, sources, root) for error in exc.errors(include_url=False)]
    return [_settings_error(exc, sources)]


def _line(error: Mapping[str, Any], sources: Sources, root: type[BaseModel]) -> str:
    loc = tuple(error["loc"])
    name = _dotted(loc) or "settings"
    origin, given = _origin(loc, sources)
    if given is _MISSING:
        given = error.get("input")
    if error["type"] == "extra_forbidden":
        return f"unknown setting {name} = {_show(given)} ({origin}); {_known(root, loc)}"
    return f"invalid setting {name} = {_show(given)} ({origin}): {_allowed(error)}"


def _origin(loc: tuple, sources: Sources) -> tuple[str, Any]:
    """Where the value at ``loc`` came from, and the value as that source gave it."""
    value = _lookup(sources.flags, loc)
    if value is not _MISSING:
        return "from --" + str(loc[-1]).replace("_", "-"), value
    env = {key.lower(): key for key in sources.environ}
    for depth in range(len(loc), 0, -1):  # TUNEGATE_A__B__C, then TUNEGATE_A__B holding {"c": ...}, ...
        wanted = (sources.env_prefix + sources.env_delimiter.join(str(part) for part in loc[:depth])).lower()
        key = env.get(wanted)
        if key is None:
            continue
        raw = sources.environ[key]
        if depth == len(loc):
            return f"from environment variable {key}", raw
        try:
            value = _lookup(json.loads(raw), loc[depth:])
        except ValueError:
            continue
        if value is not _MISSING:
            return f"from environment variable {key}", value
    value = _lookup(sources.file_values, loc)
    if value is not _MISSING and sources.file_path is not None:
        return f"from config file {sources.file_path}", value
    return "from the defaults", _MISSING


def _lookup(data: Any, loc: tuple) -> Any:
    for part in loc:
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and -len(data) <= part < len(data):
            data = data[part]
        else:
            return _MISSING
    return data


def _allowed(error: Mapping[str, Any]) -> str:
    ctx = error.get("ctx") or {}
    if error["type"] == "literal_error" and "expected" in ctx:
        return f"must be one of {ctx['expected']}"
    message = str(error["msg"])
    message = re.sub(r"^Value error, ", "", message)
    return re.sub(r"^Input should be ", "must be ", message)


def _known(root: type[BaseModel], loc: tuple) -> str:
    """The settings that exist where an unknown one was given, with a guess at the intended."""
    model = _model_at(root, loc[:-1])
    if model is None:
        return "not a setting"
    names = list(model.model_fields)
    guess = difflib.get_close_matches(str(loc[-1]), names, n=1)
    if guess:
        return f"did you mean {guess[0]}?"
    where = f"in {_dotted(loc[:-1])}" if loc[:-1] else "at the top level"
    return f"the settings {where} are {', '.join(names)}"


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The settings class whose fields sit at ``loc`` (dict keys and list indices skipped)."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) in (dict, list):
            current = typing.get_args(current)[-1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """``X | None`` → ``X``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _settings_error(exc: ValueError, sources: Sources) -> str:
    # pydantic-settings: 'error parsing value for field "load_models" from source "EnvSettingsSource"'
    match = re.search(r'field "([^"]+)" from source "EnvSettingsSource"', str(exc))
    if match:
        wanted = (sources.env_prefix + match.group(1)).lower()
        for key, raw in sources.environ.items():
            if key.lower() == wanted:
                return (f"invalid setting {match.group(1)} = {_show(raw)} (from environment variable {key}): "
                        f"must be JSON (e.g. [\"a\", \"b\"] for a list, {{\"key\": 1}} for a table)")
    return f"invalid settings: {exc}"


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any) -> str:
    if value is _MISSING:
        return "?"
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
