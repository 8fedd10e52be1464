"""The other serving workers of this host, as far as metrics go.

``tunegate serve --workers N`` runs N processes sharing the public ports; a scrape lands on
any one of them. Each worker therefore also serves its own metrics on a Unix socket in the
workers' run directory (``worker-<i>.sock``, private to this host and user), and the worker
that is scraped asks its siblings there and sums (``gateway.core.metrics_merge``). A worker
that does not answer in time (restarting, say) is left out of that scrape.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("tunegate.workers")

_ASK_TIMEOUT_SECONDS = 2.0


class WorkerPeers:
    def __init__(self, run_dir: Path, index: int, count: int) -> None:
        self.run_dir = Path(run_dir)
        self.index = index
        self.count = count
        self._runner: web.AppRunner | None = None

    def socket_path(self, index: int) -> Path:
        return self.run_dir / f"worker-{index}.sock"

    async def start(self, registry: CollectorRegistry) -> None:
        """Serve this worker's own metrics to its siblings."""
        async def own(request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics/local", own)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        path = self.socket_path(self.index)
        path.unlink(missing_ok=True)  # a previous incarnation's
        await web.UnixSite(self._runner, str(path)).start()

    async def fetch(self) -> list[str]:
        """The other workers' expositions (those that answered)."""
        others = [i for i in range(self.count) if i != self.index]
        return [text for text in await asyncio.gather(*(self._ask(i) for i in others)) if text is not None]

    async def _ask(self, index: int) -> str | None:
        connector = aiohttp.UnixConnector(path=str(self.socket_path(index)))
        try:
            async with aiohttp.ClientSession(connector=connector,
                                             timeout=aiohttp.ClientTimeout(total=_ASK_TIMEOUT_SECONDS)) as session:
                async with session.get("http://worker/metrics/local") as response:
                    return await response.text()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("worker %d did not answer for metrics: %s", index, exc)
            return None

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
