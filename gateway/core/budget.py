"""The memory that requests being read and decoded may claim together.

Each request takes its share before it allocates: its body before reading it, the Python
objects a JSON header parses into before parsing it, each tensor's array before building
it. Over the budget the request is answered 503 at once and the process does not grow;
a request that could never fit, even alone, is answered 413. What a request claims is a
function of the bytes it sent (a shape it merely claims costs nothing until the data is
there), so a tiny request can never reserve much.

Claims are made on the event loop and, for a large body decoded in a worker thread, from
that thread: one lock guards the total.
"""

from __future__ import annotations

import threading

from .errors import BudgetExceeded, PayloadTooLarge

# What orjson builds per byte of JSON, measured (tracemalloc, Python 3.11): about 4-6 bytes
# per byte of numbers (and the codec's flat copy of the list adds up to 2 more), plus an
# object per list, dict and string that a few bytes of text make: "[]," becomes a 56-byte
# list and its slot, "{}," a 64-byte dict, '"a",' a 50-byte str.
_JSON_PER_BYTE = 8
_JSON_PER_LIST = 64
_JSON_PER_DICT = 232
_JSON_PER_QUOTE = 25  # half a string each
BYTES_ELEMENT_COST = 8 + 33  # an object array slot and an empty bytes object, per BYTES element
JSON_OUTPUT_ELEMENT_COST = 32  # the text orjson writes per element, at most (a float64 and a comma)


def json_cost(text: bytes) -> int:
    """An upper estimate of the memory ``orjson.loads(text)`` allocates."""
    return scan_json(text)[0]


def scan_json(text: bytes) -> tuple[int, bool]:
    """:func:`json_cost`, and whether ``text`` may hold a JSON ``true`` or ``false``.

    One translate pass keeps the bytes that open lists, dicts and strings, and the letters of
    true and false; the counts and the search then run over what is left, which on a numeric
    body is a few bytes (three counts and two searches over the whole body cost five passes).
    Letters of strings are kept too, so the answer may be a false "maybe", never a false "no".
    """
    kept = text.translate(None, _NOT_KEPT)
    cost = (_JSON_PER_BYTE * len(text) + _JSON_PER_LIST * kept.count(b"[")
            + _JSON_PER_DICT * kept.count(b"{") + _JSON_PER_QUOTE * kept.count(b'"'))
    return cost, b"true" in kept or b"false" in kept


_NOT_KEPT = bytes(b for b in range(256) if b not in b'[{"truefals')


class MemoryBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.refused = 0  # requests answered 503 for want of budget
        self._lock = threading.Lock()

    def claim(self) -> Claim:
        return Claim(self)

    def _take(self, nbytes: int, held: int, what: str) -> None:
        if held + nbytes > self.limit:
            raise PayloadTooLarge(f"{what} needs about {held + nbytes} bytes of memory to decode, over the "
                                  f"server's decode budget of {self.limit} bytes: send a smaller request")
        with self._lock:
            if self.used + nbytes > self.limit:
                self.refused += 1
                raise BudgetExceeded(f"server busy: requests being decoded hold {self.used} of {self.limit} "
                                     f"bytes of decode memory and {what} needs {nbytes} more; retry later")
            self.used += nbytes

    def _give_back(self, nbytes: int) -> None:
        with self._lock:
            self.used -= nbytes


class Claim:
    """One request's share of the budget; give it back (``with`` or ``release``) when answered."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.held = 0

    def take(self, nbytes: int, what: str) -> None:
        if nbytes > 0:
            self.budget._take(nbytes, self.held, what)
            self.held += nbytes

    def shrink_to(self, nbytes: int) -> None:
        """Give back what was taken beyond ``nbytes`` (e.g. a body shorter than its bound)."""
        if nbytes < self.held:
            self.budget._give_back(self.held - nbytes)
            self.held = nbytes

    def release(self) -> None:
        self.shrink_to(0)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
