"""The composition root: builds the core, the runtimes, the loop and the repository
watcher for one repository, and owns their lifetimes. Front ends (``gateway.http``,
``gateway.grpc``) are handed a :class:`Gateway` and only translate their protocol to its
:class:`~gateway.core.dataplane.DataPlane`; nothing here knows aiohttp or grpc.

Start-up, in order: the Triton endpoint fleet, the registry (initial load in the
background, so liveness answers while models load; with ``exit_on_error`` it is awaited
and a failure stops start-up), the repository watcher (poll mode), the loop. Clean-up runs
the other way: the loop first (jobs cancelled, captures flushed while models are there),
the watcher, the registry (queues drained, sessions closed), the fleet last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from model_repo import Repository, RepositoryWatcher
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from .core.budget import MemoryBudget
from .core.dataplane import DataPlane
from .core.errors import GatewayError, StartupError
from .core.metrics import build_registry
from .core.metrics_merge import merge_expositions
from .core.registry import Registry, RuntimeFactory
from .core.shm import SharedMemoryRegions
from .core.stats import StatsBook
from .core.types import RequestIds
from .loop.wiring import Loop
from .runtime.endpoints import TritonFleet
from .runtime.factory import runtime_factory as default_runtime_factory
from .settings import Settings

log = logging.getLogger("tunegate.gateway")


@dataclass(eq=False)
class Gateway:
    settings: Settings
    repo: Repository
    book: StatsBook
    fleet: TritonFleet  # Triton endpoint pools, shared by every model forwarded to them
    registry: Registry
    dataplane: DataPlane
    budget: MemoryBudget
    metrics: CollectorRegistry
    loop: Loop
    shm: SharedMemoryRegions  # Triton's system shared-memory regions (off unless allowed)
    request_ids: RequestIds  # ids for requests that came without one, on every front end
    # With several serving workers on the host: the other workers' metrics, to sum into ours.
    peer_metrics: Callable[[], Awaitable[list[str]]] | None = None

    @classmethod
    def build(cls, settings: Settings, *, metrics_registry: CollectorRegistry | None = None,
              runtime_factory: RuntimeFactory | None = None) -> Gateway:
        """Everything wired, nothing started (no I/O)."""
        repo = Repository(settings.repo)
        book = StatsBook()
        fleet = TritonFleet()
        registry = Registry(repo, settings, book, runtime_factory or default_runtime_factory(fleet))
        dataplane = DataPlane(registry, book)
        budget = MemoryBudget(int(settings.decode_budget_bytes))
        metrics = build_registry(
            book, lambda: [(s.model, s.version, s.runtime.platform, s.runtime.provider) for s in registry.serving()],
            metrics_registry)
        Gauge("tunegate_decode_memory_bytes", "Decode budget held by requests being read and decoded",
              registry=metrics).set_function(lambda: budget.used)
        loop = Loop(settings, registry, dataplane, metrics)
        shm = SharedMemoryRegions(settings.allow_shared_memory)
        if settings.allow_shared_memory:
            dataplane.extensions.append("system_shared_memory")
        dataplane.extensions += ["logging", "trace"]  # Triton's run-time log and trace settings
        return cls(settings, repo, book, fleet, registry, dataplane, budget, metrics, loop, shm, RequestIds())

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        if not await asyncio.to_thread(self.repo.root.is_dir):
            raise GatewayError(f"model repository {self.repo.root} is not a directory")
        self.dataplane.tracing.start()
        try:
            async with self.registry.running():
                if self.settings.exit_on_error:
                    await self.registry.started.wait()
                    failed = self.registry.failures()
                    if failed:
                        raise StartupError("exit_on_error: " + "; ".join(failed))
                async with self._watching():
                    self.loop.start()
                    try:
                        yield self
                    finally:
                        await self.loop.close()
        finally:
            self.shm.close()
            await self.fleet.close()
            await self.dataplane.tracing.close()  # the last spans exported
            self.dataplane.logs.close()

    async def scrape(self) -> bytes:
        """The Prometheus exposition: this process's, summed with its sibling workers'."""
        if self.peer_metrics is None:
            return generate_latest(self.metrics)
        return merge_expositions(self.metrics, await self.peer_metrics())

    def begin_shutdown(self) -> None:
        """Not ready from now on; queued requests run without waiting for batches to fill."""
        self.registry.begin_shutdown()

    @contextlib.asynccontextmanager
    async def _watching(self) -> AsyncIterator[None]:
        if self.settings.model_control != "poll":
            yield
            return
        # The first snapshot is taken now; versions published from here on arrive as events
        # (the initial load may see some of them too: reconcile is idempotent).
        watcher = await asyncio.to_thread(RepositoryWatcher, self.repo)
        task = asyncio.create_task(_poll(watcher, self.registry, self.settings.poll_interval_seconds),
                                   name="repository watcher")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _poll(watcher: RepositoryWatcher, registry: Registry, interval: float) -> None:
    await registry.started.wait()
    while True:
        await asyncio.sleep(interval)
        started = time.monotonic()
        try:
            events = await asyncio.to_thread(watcher.poll)
        except Exception:  # a transient file-system error must not stop hot reload for good
            log.exception("repository poll failed; retrying")
            continue
        if events:
            log.info("repository changed: %s", ", ".join(f"{e.change.value} {e.model}"
                                                           + (f"/{e.version}" if e.version else "") for e in events))
            await registry.apply(events)
        log.debug("poll took %.1f ms", (time.monotonic() - started) * 1000)
