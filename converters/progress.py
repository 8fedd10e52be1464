"""Progress of the long steps, on stderr so ``--json`` keeps stdout to one object."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator


class Progress:
    """A step counter; ``timings`` keeps each step's seconds for reports and benches."""

    def __init__(self, total: int, *, enabled: bool = True, desc: str = "convert") -> None:
        self.timings: dict[str, float] = {}
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False,
                             bar_format="{desc}: {n}/{total} {postfix} [{elapsed}]")

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self._bar is not None:
            self._bar.set_postfix_str(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 3)
            if self._bar is not None:
                self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
