"""Where an unpinned request goes: the registry asks a :class:`Router`.

The core knows no canaries. The loop's canary controller is a Router: the registry tells it
each model's serving versions and the repository's pending canary whenever they change
(``plan``), and asks it for every unpinned request (``pick``). Without a loop every request
goes to the newest serving version.
"""

from __future__ import annotations

from typing import Protocol


class Router(Protocol):
    def plan(self, model: str, serving: list[int], canary: int | None) -> None:
        """The model now serves ``serving`` (ascending); ``canary`` is the repository's pending
        canary among them, or None. Called on the event loop after every change."""

    def pick(self, model: str, split: bool, key: str | None = None) -> int | None:
        """The version for an unpinned request: with ``split`` (inference), its share of a
        traffic split (the same one for every request with the same ``key``, a client's id);
        without, the stable version. None: the newest serving version."""


class _Newest:
    def plan(self, model: str, serving: list[int], canary: int | None) -> None:
        pass

    def pick(self, model: str, split: bool, key: str | None = None) -> int | None:
        return None


NEWEST: Router = _Newest()
