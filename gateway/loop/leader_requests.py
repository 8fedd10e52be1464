"""Control calls only the loop's leader carries out, asked from any process.

Starting or cancelling a fine-tune job changes what the leader owns (its one job per model),
so a worker or replica that receives such a call writes it as a request file on the
repository (``<repo>/.loop/requests/<id>.json``, atomic) and waits for the leader's answer
file (``<id>.answer.json``); the leader looks for requests every poll. The shared volume is
already every process's meeting point, so this needs no addresses, no discovery and no
port between pods; an answer carries the outcome or the error (its type and message), which
the asking process raises as its own, so the client sees the same status from any replica.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from model_repo.durable import atomic_write_json

from ..core.errors import GatewayError, LeaderUnavailable, error_type
from .evidence import LOOP_DIR

log = logging.getLogger("tunegate.leader")

_ANSWER = ".answer.json"


class RequestBox:
    def __init__(self, repo_root: Path) -> None:
        self.directory = Path(repo_root) / LOOP_DIR / "requests"

    async def ask(self, request: dict[str, Any], timeout: float, poll: float = 0.05) -> dict[str, Any]:
        """Hand ``request`` to the leader and return its answer, or raise the error it reports."""
        rid = uuid.uuid4().hex
        path, answer = self.directory / f"{rid}.json", self.directory / f"{rid}{_ANSWER}"
        await asyncio.to_thread(self._write, path, request)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(poll)
            reply = await asyncio.to_thread(_take, answer)
            if reply is not None:
                if "error" in reply:
                    raise error_type(reply["error"].get("type", ""))(str(reply["error"].get("message", "")))
                return reply["result"]
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise LeaderUnavailable(f"the loop's leader did not answer within {timeout:g} s; retry later "
                                "(a new leader is elected within the lease time)")

    def _write(self, path: Path, request: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, request)

    def pending(self) -> list[tuple[Path, dict[str, Any] | None]]:
        """Requests waiting, oldest first (blocking); None for one that does not parse."""
        try:
            paths = sorted((p for p in self.directory.glob("*.json") if not p.name.endswith(_ANSWER)),
                           key=lambda p: p.stat().st_mtime)
        except OSError:
            return []
        out = []
        for path in paths:
            try:
                out.append((path, json.loads(path.read_bytes())))
            except FileNotFoundError:
                continue  # withdrawn by an asker that gave up
            except (OSError, ValueError):
                out.append((path, None))
        return out

    def answer(self, path: Path, *, result: dict[str, Any] | None = None, error: BaseException | None = None) -> None:
        """Reply to the request at ``path`` and remove it (blocking)."""
        if error is not None:
            message = getattr(error, "message", None) or str(error)
            reply: dict[str, Any] = {"error": {"type": type(error).__name__ if isinstance(error, GatewayError)
                                               else "GatewayError", "message": message}}
        else:
            reply = {"result": result}
        atomic_write_json(path.with_name(path.stem + _ANSWER), reply)
        path.unlink(missing_ok=True)


def _take(path: Path) -> dict[str, Any] | None:
    try:
        reply = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    return reply
