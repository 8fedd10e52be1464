"""Client mistakes must not fill the log.

aiohttp logs every request its HTTP parser refuses (a bad request line, invalid header
bytes, headers over the limit, a body whose ``Content-Encoding`` does not decode) as ERROR
with a full traceback, outside any handler or middleware. Those are the client's faults: this filter on the ``aiohttp.server``
logger turns each into one WARNING line without a traceback, at most ``burst`` lines per
``window`` seconds (the next line allowed says how many were left out). Real faults (5xx)
pass untouched.
"""

from __future__ import annotations

import logging
import time

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError


class ClientErrorLogFilter(logging.Filter):
    def __init__(self, burst: int = 10, window: float = 60.0) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._window_start = float("-inf")
        self._lines = 0
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = _client_fault(record.exc_info[1] if record.exc_info else None)
        if exc is None:
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
        remote = f" from {record.args[0]}" if isinstance(record.args, tuple) and record.args else ""
        record.msg = "refused a malformed request%s: %s%s"
        record.args = (remote, f"{exc.code} {exc.message}", left_out)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True


def _client_fault(exc: BaseException | None) -> HttpProcessingError | None:
    """The parser's refusal behind a logged exception, when it is the client's fault.

    A body whose ``Content-Encoding`` does not decode is refused by the parser too, but
    aiohttp finds out while draining the body after the handler has answered 400, and logs
    the ``RequestPayloadError`` that wraps the parser's ``ContentEncodingError`` as an
    "Unhandled exception": the refusal is found down the exception's chain."""
    seen = 0
    while exc is not None and seen < 4:  # a short chain: the payload error, then the parser's
        if isinstance(exc, HttpProcessingError):
            return exc if exc.code < 500 else None
        if not isinstance(exc, RequestPayloadError):
            return None
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None
