"""Triton's trace settings (global, and per model), and the sampling they decide.

Every field of a model's settings that the model does not set follows the global one.
Values travel as Triton writes them: strings (``trace_level`` a list of strings); an update
may give numbers too, and ``None`` clears a field (the model's falls back to the global one;
the global one to its value at start). Updating the model's settings with nothing clears
them all, as in Triton.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import BadRequest
from .tracing_settings import TracingSettings

LEVELS = ("OFF", "TIMESTAMPS", "TENSORS")
FIELDS = ("trace_level", "trace_rate", "trace_count", "log_frequency", "trace_file", "trace_mode")


@dataclass
class Sampler:
    """One scope's sampling: every ``rate``-th request, while ``remaining`` is not 0."""

    levels: tuple[str, ...]
    rate: int
    remaining: int  # -1: no limit
    seen: int = 0

    @property
    def on(self) -> bool:
        return self.remaining != 0 and any(level != "OFF" for level in self.levels)

    @property
    def tensors(self) -> bool:
        return "TENSORS" in self.levels

    def take(self) -> bool:
        """Whether this request is traced (counts it either way)."""
        if not self.on:
            return False
        self.seen += 1
        if self.seen % self.rate:
            return False
        if self.remaining > 0:
            self.remaining -= 1
        return True


@dataclass
class TraceState:
    defaults: dict[str, Any]
    values: dict[str, Any] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    global_sampler: Sampler | None = None
    samplers: dict[str, Sampler] = field(default_factory=dict)  # models with settings of their own

    @classmethod
    def of(cls, settings: TracingSettings) -> TraceState:
        defaults = {"trace_level": list(settings.level), "trace_rate": settings.rate,
                    "trace_count": settings.count, "log_frequency": 0, "trace_file": "",
                    "trace_mode": "opentelemetry"}
        state = cls(defaults, dict(defaults))
        state.global_sampler = state._sampler(state.values)
        return state

    # -------------------------------------------------------------- reading
    def effective(self, model: str | None = None) -> dict[str, Any]:
        return {**self.values, **self.models.get(model, {})} if model else dict(self.values)

    def show(self, model: str | None = None) -> dict[str, Any]:
        """As Triton answers: every value a string, ``trace_level`` a list of them; the
        count is what is left to take."""
        values = self.effective(model)
        sampler = self.samplers.get(model, self.global_sampler) if model else self.global_sampler
        values["trace_count"] = sampler.remaining
        return {k: list(v) if k == "trace_level" else str(v) for k, v in values.items()}

    def sampler(self, model: str) -> Sampler:
        return self.samplers.get(model, self.global_sampler)

    @property
    def any_on(self) -> bool:
        return self.global_sampler.on or any(s.on for s in self.samplers.values())

    # -------------------------------------------------------------- updating
    def update(self, changes: dict[str, Any], model: str | None = None) -> None:
        """Apply ``changes`` (validated first: nothing changes when one is wrong)."""
        parsed = {name: None if value is None else _parse(name, value) for name, value in changes.items()}
        if "trace_file" in parsed and parsed["trace_file"] not in (None, self.values["trace_file"]):
            raise BadRequest("trace_file cannot be changed over the network (spans go to the OTLP endpoint)")
        if model is None:
            for name, value in parsed.items():
                self.values[name] = self.defaults[name] if value is None else value
            self.global_sampler = self._sampler(self.values, keep=self.global_sampler,
                                                 recount="trace_count" in parsed or "trace_rate" in parsed)
        elif not parsed:
            self.models.pop(model, None)
        else:
            own = self.models.setdefault(model, {})
            for name, value in parsed.items():
                if value is None:
                    own.pop(name, None)
                else:
                    own[name] = value
            if not own:
                del self.models[model]
        self._resample(model)

    def _resample(self, changed: str | None) -> None:
        """Models with their own settings get their own sampler (a new one when they changed)."""
        samplers = {}
        for model, own in self.models.items():
            old = self.samplers.get(model)
            keep = old if old is not None and model != changed else None
            samplers[model] = keep or self._sampler(self.effective(model))
        self.samplers = samplers

    @staticmethod
    def _sampler(values: dict[str, Any], keep: Sampler | None = None, recount: bool = True) -> Sampler:
        if keep is not None and not recount:
            return Sampler(tuple(values["trace_level"]), values["trace_rate"], keep.remaining, keep.seen)
        return Sampler(tuple(values["trace_level"]), values["trace_rate"], values["trace_count"])


def _parse(name: str, value: Any) -> Any:
    if name not in FIELDS:
        raise BadRequest(f"unknown trace setting {name!r}; known: {', '.join(FIELDS)}")
    if name == "trace_level":
        levels = [value] if isinstance(value, str) else value
        if not isinstance(levels, list) or not levels or any(level not in LEVELS for level in levels):
            raise BadRequest(f"trace_level must be a list of {', '.join(LEVELS)}, got {value!r}")
        return list(dict.fromkeys(levels))
    if name in ("trace_file", "trace_mode"):
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if name == "trace_mode" and value != "opentelemetry":
            raise BadRequest(f"trace_mode is 'opentelemetry' here, got {value!r}")
        return str(value)
    return _integer(name, value, lowest={"trace_rate": 1, "trace_count": -1, "log_frequency": 0}[name])


def _integer(name: str, value: Any, lowest: int) -> int:
    if isinstance(value, list) and len(value) == 1:  # gRPC's SettingValue is a list of strings
        value = value[0]
    try:
        number = int(value) if not isinstance(value, bool | float) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < lowest:
        raise BadRequest(f"{name} must be an integer >= {lowest}, got {value!r}")
    return number
