"""Triton's logging extension over Python logging: read and change, at run time, what the
``tunegate`` loggers write and how the console log is formatted.

Triton's fields map as follows: ``log_verbose_level`` > 0 lets DEBUG records through,
``log_info``, ``log_warning`` and ``log_error`` their levels (each on its own: the logger's
level is the lowest one on, and a filter on the log's handlers drops a level that is off
in between); ``log_format`` ``default`` keeps the handlers' own format, ``ISO8601`` stamps
each line with UTC ISO 8601 time. ``log_file`` is reported but cannot be changed over the
network (as in Triton: the server's log file is not a client's to choose).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .errors import BadRequest

LOGGERS = ("tunegate", "aiohttp.access")
FORMATS = ("default", "ISO8601")
_ISO = logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ")
_ISO.converter = time.gmtime


class _LevelsOff(logging.Filter):
    """Drops the tunegate loggers' records of the levels switched off."""

    def __init__(self) -> None:
        super().__init__()
        self.off: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.off and record.levelno in self.off and record.name.startswith(LOGGERS))


class LogSettings:
    def __init__(self, level: str = "INFO", root: logging.Logger | None = None) -> None:
        self._root = root or logging.getLogger()
        number = logging.getLevelName(level)
        self.values: dict[str, Any] = {
            "log_file": "", "log_info": number <= logging.INFO, "log_warning": number <= logging.WARNING,
            "log_error": number <= logging.ERROR, "log_verbose_level": int(number <= logging.DEBUG),
            "log_format": "default"}
        self._filter = _LevelsOff()
        self._formats: dict[logging.Handler, logging.Formatter | None] = {}  # handlers' own, while ISO8601

    def show(self) -> dict[str, Any]:
        return dict(self.values)

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply ``changes`` (all checked before any is applied); None leaves a field as it is."""
        parsed = {name: _parse(name, value, self.values) for name, value in changes.items() if value is not None}
        self.values.update(parsed)
        self._apply()
        return self.show()

    def close(self) -> None:
        """Give the handlers back their own formats and filters."""
        self._own_formats()
        for handler in self._root.handlers:
            handler.removeFilter(self._filter)

    def _apply(self) -> None:
        v = self.values
        enabled = {logging.DEBUG: v["log_verbose_level"] > 0, logging.INFO: v["log_info"],
                   logging.WARNING: v["log_warning"], logging.ERROR: v["log_error"], logging.CRITICAL: v["log_error"]}
        lowest = min((level for level, on in enabled.items() if on), default=logging.CRITICAL + 1)
        self._filter.off = {level for level, on in enabled.items() if not on and level > lowest}
        for name in LOGGERS:
            logging.getLogger(name).setLevel(lowest)
        for handler in self._root.handlers:
            if self._filter.off:
                handler.addFilter(self._filter)  # a no-op when it is there already
            else:
                handler.removeFilter(self._filter)
        self._format(v["log_format"] == "ISO8601")

    def _format(self, iso: bool) -> None:
        if iso:
            for handler in self._root.handlers:
                if handler not in self._formats:
                    self._formats[handler] = handler.formatter
                    handler.setFormatter(_ISO)
        else:
            self._own_formats()

    def _own_formats(self) -> None:
        for handler, formatter in self._formats.items():
            handler.setFormatter(formatter)
        self._formats.clear()


def _parse(name: str, value: Any, current: dict[str, Any]) -> Any:
    if name not in current:
        raise BadRequest(f"unknown log setting {name!r}; known: {', '.join(current)}")
    if name == "log_file":
        if value != current["log_file"]:
            raise BadRequest("log_file cannot be changed over the network")
        return value
    if name == "log_format":
        if value not in FORMATS:
            raise BadRequest(f"log_format must be one of {', '.join(FORMATS)}, got {value!r}")
        return value
    if name == "log_verbose_level":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BadRequest(f"log_verbose_level must be an integer >= 0, got {value!r}")
        return value
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false, got {value!r}")
    return value
