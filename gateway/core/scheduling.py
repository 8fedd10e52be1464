"""Triton's schedule policy: how a version's requests queue (``config.pbtxt`` ``dynamic_batching``)
and what one request asks for (its ``priority`` and ``timeout`` parameters).

Triton's rules, kept here: levels run from 1 (highest) to ``priority_levels``; a request's
priority 0 means ``default_priority_level``; each level has its own queue with its own
``ModelQueuePolicy`` (``priority_queue_policy``, else ``default_queue_policy``); a request's
``timeout`` (microseconds) counts only where ``allow_timeout_override`` is set, and may only
shorten the level's ``default_timeout_microseconds``. Two choices differ from Triton: a
priority above ``priority_levels`` is refused (400) rather than quietly served at the default
level, and a queue size of 0 means the gateway's ``max_queue_size`` (bounded), not unbounded.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from model_repo import ModelConfig
from tritonclient.grpc import model_config_pb2 as mc

from .errors import BadRequest, LoadError, brief


@dataclass(frozen=True)
class Schedule:
    """What one request asked for, as the client sent it (0: not given)."""

    priority: int = 0
    timeout_us: int = 0

    @classmethod
    def of(cls, parameters: Mapping[str, Any]) -> Schedule:
        """The request's ``priority`` and ``timeout`` parameters, checked (400 if malformed)."""
        if "priority" not in parameters and "timeout" not in parameters:
            return NO_SCHEDULE  # most requests: no new object
        return cls(_uint(parameters, "priority"), _uint(parameters, "timeout"))

    @classmethod
    def merged(cls, schedules: list[Schedule]) -> Schedule:
        """One batch's: its highest priority and its shortest timeout."""
        if all(s is NO_SCHEDULE for s in schedules):
            return NO_SCHEDULE
        priorities = [s.priority for s in schedules if s.priority]
        timeouts = [s.timeout_us for s in schedules if s.timeout_us]
        return cls(min(priorities, default=0), min(timeouts, default=0))


NO_SCHEDULE = Schedule()

# The schedule of the batch being run, so a runtime that forwards (Triton) can pass it on;
# set by the batcher inside the task that runs the batch, so it never leaks to another one.
BATCH_SCHEDULE = contextvars.ContextVar[Schedule]("tunegate_batch_schedule", default=NO_SCHEDULE)


def _uint(parameters: Mapping[str, Any], name: str) -> int:
    value = parameters.get(name, 0)
    # bool is an int in Python, and JSON's true is not a priority.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"request parameter {name!r} must be a non-negative integer"
                         f"{' (microseconds)' if name == 'timeout' else ''}, got {brief(value)}")
    return value


@dataclass(frozen=True)
class QueuePolicy:
    """One priority level's queue (Triton's ``ModelQueuePolicy``)."""

    max_queue_size: int = 1024
    timeout_us: int = 0  # 0: a request may wait as long as it takes
    delay: bool = False  # timeout_action DELAY: a timed-out request waits behind its level's others
    allow_timeout_override: bool = False

    @classmethod
    def from_proto(cls, policy: mc.ModelQueuePolicy, default_max_queue_size: int) -> QueuePolicy:
        return cls(max_queue_size=policy.max_queue_size or default_max_queue_size,
                   timeout_us=policy.default_timeout_microseconds,
                   delay=policy.timeout_action == mc.ModelQueuePolicy.DELAY,
                   allow_timeout_override=policy.allow_timeout_override)

    def timeout_for(self, requested_us: int) -> int:
        """The timeout a request gets: its own only where overriding is allowed, and only to
        shorten the default (Triton's rule); no default timeout counts as an infinite one."""
        if self.allow_timeout_override and requested_us and (
                not self.timeout_us or requested_us < self.timeout_us):
            return requested_us
        return self.timeout_us


@dataclass(frozen=True)
class BatchPolicy:
    """How a version's requests queue and merge.

    ``max_queue_size``, ``queue_timeout_us``, ``delay_on_timeout`` and
    ``allow_timeout_override`` are the default queue policy: every level without one of
    its own in ``level_policies`` uses it.
    """

    max_batch_size: int  # 0: no merging
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 1024
    queue_timeout_us: int = 0  # 0: a request may wait as long as it takes
    delay_on_timeout: bool = False
    allow_timeout_override: bool = False
    priority_levels: int = 0  # 0: one level, priorities ignored
    default_priority_level: int = 0
    level_policies: Mapping[int, QueuePolicy] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: ModelConfig, default_max_queue_size: int) -> BatchPolicy:
        if not config.HasField("dynamic_batching"):
            # No dynamic batching: each request runs as it comes (a client's own batch still counts).
            return cls(max_batch_size=0, max_queue_size=default_max_queue_size)
        db = config.dynamic_batching
        default = QueuePolicy.from_proto(db.default_queue_policy, default_max_queue_size)
        batching = config.max_batch_size > 0
        policy = cls(
            max_batch_size=max(config.max_batch_size, 0),
            max_queue_delay_us=db.max_queue_delay_microseconds if batching else 0,
            preferred_batch_sizes=tuple(sorted(s for s in db.preferred_batch_size if 0 < s <= config.max_batch_size)),
            max_queue_size=default.max_queue_size,
            queue_timeout_us=default.timeout_us,
            delay_on_timeout=default.delay,
            allow_timeout_override=default.allow_timeout_override,
            priority_levels=db.priority_levels,
            default_priority_level=db.default_priority_level,
            level_policies={level: QueuePolicy.from_proto(p, default_max_queue_size)
                            for level, p in db.priority_queue_policy.items()},
        )
        policy._check(config.name)
        return policy

    def _check(self, model: str) -> None:
        # Triton refuses to load these configs; so does the gateway, with the same reasons.
        levels = self.priority_levels
        if levels and not 1 <= self.default_priority_level <= levels:
            raise LoadError(f"model {model!r}: dynamic_batching.default_priority_level "
                            f"{self.default_priority_level} must be in [1, priority_levels={levels}]")
        outside = sorted(k for k in self.level_policies if not 1 <= k <= levels)
        if outside:
            raise LoadError(f"model {model!r}: dynamic_batching.priority_queue_policy levels {outside} "
                            f"must be in [1, priority_levels={levels}]")

    @property
    def default_queue(self) -> QueuePolicy:
        return QueuePolicy(self.max_queue_size, self.queue_timeout_us, self.delay_on_timeout,
                           self.allow_timeout_override)

    def queue_policy(self, level: int) -> QueuePolicy:
        return self.level_policies.get(level) or self.default_queue

    def level_of(self, priority: int) -> int:
        """The level a request's priority puts it on (400 if the model has no such level)."""
        if not self.priority_levels:
            return 0  # one queue: Triton ignores priorities here, and so does the gateway
        if priority == 0:
            return self.default_priority_level
        if priority > self.priority_levels:
            raise BadRequest(f"priority {priority} is out of range: this model has priority levels "
                             f"1 (highest) to {self.priority_levels}; 0 means the default level "
                             f"{self.default_priority_level}")
        return priority


__all__ = ["BATCH_SCHEDULE", "NO_SCHEDULE", "BatchPolicy", "QueuePolicy", "Schedule"]
