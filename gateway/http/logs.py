"""Client mistakes must not fill the log.

aiohttp logs every request its HTTP parser refuses (a bad request line, invalid header
bytes, headers over the limit) as ERROR with a full traceback, before any handler or
middleware runs. Those are the client's faults: this filter on the ``aiohttp.server``
logger turns each into one WARNING line without a traceback, at most ``burst`` lines per
``window`` seconds (the next line allowed says how many were left out). Real faults (5xx)
pass untouched.
"""

from __future__ import annotations

import logging
import time

from aiohttp.http_exceptions import HttpProcessingError


class ClientErrorLogFilter(logging.Filter):
    def __init__(self, burst: int = 10, window: float = 60.0) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._window_start = float("-inf")
        self._lines = 0
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or exc.code >= 500:
            return True
        now = time.monotonic()
        if now - self._window_start >= self.window:
            self._window_start, self._lines = now, 0
        if self._lines >= self.burst:
            self.suppressed += 1
            return False
        self._lines += 1
        left_out = f" ({self.suppressed} similar lines left out)" if self.suppressed else ""
        self.suppressed = 0
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg = "refused a malformed request from %s: %s%s"
        record.args = (remote, f"{exc.code} {exc.message}", left_out)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True
