"""Which process runs the loop: one leader among every worker and replica over a repository.

Serving needs no leader (every process routes from the repository's state), but the loop's
decisions must be taken once: fine-tune triggers and launches, canary verdicts. The leader
is elected with a coordination primitive that already exists, behind one small interface
(:class:`Campaign`: "try to lead or keep leading now", "resign"):

- :class:`FileLockCampaign` (one host, the default): an exclusive ``flock`` on a file in the
  repository. The kernel holds it for the process and drops it when the process dies, so a
  dead leader is replaced within one retry period of a follower, with no clock involved.
  ``flock`` does not span hosts on every network file system: on Kubernetes use the Lease.
- :class:`LeaseCampaign` (Kubernetes): a ``coordination.k8s.io/v1`` Lease, stepped with the
  official client's own election algorithm (``kubernetes.leaderelection``: its
  ``LeaderElection.try_acquire_or_renew`` over its ``LeaseLock``). A leader that stops
  renewing is replaced after the lease duration.

:class:`Leadership` drives either: it campaigns every ``retry_seconds`` off the event loop,
and calls ``on_elected``/``on_deposed`` on the event loop when the answer changes. A leader
whose renewals keep failing for ``renew_deadline_seconds`` steps down before its lease can
expire under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

log = logging.getLogger("tunegate.leader")


def process_identity(name: str | None = None) -> str:
    """This process's name in the election and on its files in the repository: ``name`` (an
    operator's choice), else the pod's name on Kubernetes (the chart sets ``POD_NAME``), else
    host and pid; a random tail always tells processes and incarnations apart (workers share
    a configured name)."""
    base = name or os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    return f"{base}-{uuid.uuid4().hex[:6]}"


class Campaign(Protocol):
    identity: str

    def try_lead(self) -> bool:
        """Acquire or renew leadership now (blocking; called off the event loop)."""

    def holder(self) -> str | None:
        """Who leads, as far as the primitive says (blocking)."""

    def resign(self) -> None:
        """Give leadership up, if held (blocking)."""


class FileLockCampaign:
    """Leadership is an exclusive ``flock`` on ``path``, held as long as the process lives."""

    def __init__(self, path: Path, identity: str) -> None:
        self.path = path
        self.identity = identity
        self._file = None

    def try_lead(self) -> bool:
        if self._file is not None:
            return True  # the kernel keeps the lock for us until we close it or die
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        except BaseException:
            f.close()
            raise
        # Who leads, for operators and followers' messages; the lock, not this text, decides.
        f.seek(0)
        f.truncate()
        f.write(self.identity + "\n")
        f.flush()
        self._file = f
        return True

    def holder(self) -> str | None:
        try:
            return self.path.read_text().strip() or None
        except OSError:
            return None

    def resign(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.truncate(0)
            self._file.close()  # closing drops the lock
            self._file = None


class LeaseCampaign:
    """Leadership is a Kubernetes Lease, held by renewing it within its duration."""

    def __init__(self, name: str, namespace: str, identity: str, lease_seconds: int) -> None:
        from kubernetes import config
        from kubernetes.leaderelection import electionconfig, leaderelection
        from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self.identity = identity
        self.lock = LeaseLock(name, namespace, identity)
        # The client's Config insists on renew < lease and retry >= 1; its run() loop is not
        # used (it blocks forever), only the single step it is built from.
        renew = max(2, lease_seconds * 2 // 3)
        cfg = electionconfig.Config(self.lock, lease_duration=lease_seconds, renew_deadline=renew,
                                    retry_period=1, onstarted_leading=lambda: None, onstopped_leading=None)
        self.election = leaderelection.LeaderElection(cfg)

    def try_lead(self) -> bool:
        return bool(self.election.try_acquire_or_renew())

    def holder(self) -> str | None:
        record = self.election.observed_record
        return getattr(record, "holder_identity", None)

    def resign(self) -> None:
        """The Lease is left to expire: the client has no release, and the next leader waits
        at most its duration."""


class Leadership:
    """Campaigns for leadership in the background; tells the loop when it gains or loses it."""

    def __init__(self, campaign: Campaign, *, retry_seconds: float, renew_deadline_seconds: float) -> None:
        self.campaign = campaign
        self.retry_seconds = retry_seconds
        self.renew_deadline_seconds = renew_deadline_seconds
        self.is_leader = False
        self.elected_at: float | None = None
        self.terms = 0  # times this process became leader
        self._on_elected: list[Callable[[], Awaitable[None]]] = []
        self._on_deposed: list[Callable[[], Awaitable[None]]] = []
        self._task: asyncio.Task | None = None

    @property
    def identity(self) -> str:
        return self.campaign.identity

    def on_change(self, elected: Callable[[], Awaitable[None]], deposed: Callable[[], Awaitable[None]]) -> None:
        self._on_elected.append(elected)
        self._on_deposed.append(deposed)

    def start(self) -> None:
        self._task = asyncio.create_task(self._campaign(), name="leader election")

    async def _campaign(self) -> None:
        last_success = time.monotonic()
        while True:
            try:
                won = await asyncio.to_thread(self.campaign.try_lead)
            except Exception as exc:  # an API server or file system hiccup: try again next period
                log.warning("leader election: %s: %s", type(exc).__name__, exc)
                won = False
            now = time.monotonic()
            if won:
                last_success = now
                if not self.is_leader:
                    await self._become(True)
            elif self.is_leader and now - last_success >= self.renew_deadline_seconds:
                await self._become(False)
            await asyncio.sleep(self.retry_seconds)

    async def _become(self, leader: bool, *, resigning: bool = False) -> None:
        self.is_leader = leader
        if leader:
            self.terms += 1
            self.elected_at = time.time()
            log.info("%s leads the loop", self.identity)
        else:
            self.elected_at = None
            (log.info if resigning else log.warning)("%s %s the loop's leadership", self.identity,
                                                     "resigns" if resigning else "lost")
        for callback in self._on_elected if leader else self._on_deposed:
            try:
                await callback()
            except Exception:  # one duty failing to start must not stop the election
                log.exception("leadership change handler failed")

    async def holder(self) -> str | None:
        return self.identity if self.is_leader else await asyncio.to_thread(self.campaign.holder)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.is_leader:
            await self._become(False, resigning=True)
        await asyncio.to_thread(self.campaign.resign)
