"""A real gateway on 127.0.0.1, run in its own thread and event loop, so tests can use the
official synchronous tritonclient and plain HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tritonclient.http as triton
from aiohttp import web

from gateway.http.app import AccessLogger, create_app
from gateway.http.keys import REGISTRY
from gateway.settings import Settings
from model_repo import Repository
from model_repo.triton import free_port

from . import models

API_KEY = "s3cret"


@dataclass
class Server:
    app: web.Application
    runner: web.AppRunner
    loop: asyncio.AbstractEventLoop
    port: int
    repo: Repository

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **kwargs) -> triton.InferenceServerClient:
        return triton.InferenceServerClient(self.url, **kwargs)

    def call(self, coro_or_fn, timeout: float = 60):
        """Run a coroutine (or a plain function) on the server's loop and return its result."""
        async def wrap():
            result = coro_or_fn() if callable(coro_or_fn) else coro_or_fn
            return await result if asyncio.iscoroutine(result) else result
        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    @property
    def registry(self):
        return self.app[REGISTRY]

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return http_request(self.url, method, path, body, headers)

    def json(self, method: str, path: str, doc=None, headers=None) -> tuple[int, dict]:
        return http_json(self.url, method, path, doc, headers)


def http_request(url: str, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP exchange with ``host:port``: (status, headers, body)."""
    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def http_json(url: str, method: str, path: str, doc=None, headers=None) -> tuple[int, dict]:
    status, _, body = http_request(url, method, path, None if doc is None else json.dumps(doc).encode(),
                                   {"Content-Type": "application/json", **(headers or {})})
    return status, json.loads(body) if body else {}


@contextlib.contextmanager
def serve(settings: Settings, *, wait_ready: bool = True) -> Iterator[Server]:
    """A gateway on ``settings.port``; by default once ready, else once its initial load is
    over (a server whose models fail to load is never ready under strict readiness)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gateway", daemon=True)
    thread.start()

    async def start() -> tuple[web.Application, web.AppRunner]:
        app = create_app(settings)
        # handler_cancellation: a client that disconnects cancels its request (as the CLI's runner does).
        runner = web.AppRunner(app, shutdown_timeout=settings.exit_timeout_seconds, access_log_class=AccessLogger,
                               handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", settings.port).start()
        return app, runner

    app, runner = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    server = Server(app, runner, loop, settings.port, Repository(settings.repo))
    try:
        if wait_ready:
            wait_for(lambda: server.request("GET", "/v2/health/ready")[0] == 200, what="server ready")
        else:
            wait_for(lambda: server.call(lambda: server.registry.started.is_set()), what="initial load over")
        yield server
    finally:
        with contextlib.suppress(RuntimeError):  # a test may already have shut it down
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def wait_for(predicate, *, what: str, timeout: float = 60.0, interval: float = 0.02):
    """Poll for a state change (never a timing assertion: the timeout only bounds a hang)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def make_settings(repo: Path, **kwargs) -> Settings:
    base = dict(repo=repo, port=free_port(), poll_interval_seconds=0.1, exit_timeout_seconds=20,
                leader={"poll_seconds": 0.1, "retry_seconds": 0.2},
                runtime={"provider": "cpu", "intra_op_threads": 1, "instance_count": 2})
    base.update(kwargs)
    return Settings(**base)


def build_repository(root: Path) -> Repository:
    repo = Repository(root)
    models.publish(repo, "mlp", models.mlp_fp32(), models.mlp_config("mlp"))
    # Requests wait up to 100 ms for company: concurrent clients merge into batches.
    models.publish(repo, "mlp_batched", models.mlp_fp32(), models.mlp_config("mlp_batched", delay_us=100_000))
    models.publish(repo, "int64", models.int64_model(), models.int64_config("int64"))
    models.publish(repo, "upper", models.bytes_model(), models.bytes_config("upper"))
    models.publish(repo, "bools", models.bool_model(), models.bool_config("bools"))
    return repo


@pytest.fixture(scope="package")
def gateway(tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("repo")
    build_repository(root)
    settings = make_settings(root, api_key=API_KEY, max_body_bytes=1 << 20)
    with serve(settings) as server:
        yield server
