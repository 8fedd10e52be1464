"""The traceparent a forwarding runtime passes on (apart, so the span code and the
tracing switch both import it without importing each other)."""

from __future__ import annotations

import contextvars

# The running batch's compute span as a W3C traceparent: set in the batch's own task (only
# when it is traced) for a forwarding runtime to pass on.
TRACEPARENT = contextvars.ContextVar[str | None]("tunegate_traceparent", default=None)
