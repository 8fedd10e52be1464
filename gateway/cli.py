"""``tunegate serve``: serve the repository over HTTP and gRPC (KServe v2 / Triton protocol),
both front ends over one :class:`~gateway.server.Gateway`.

Start-up, in order: the HTTP socket, the gRPC port (a taken port is one line, before any
model loads), the gateway (models load in the background), the HTTP site, the gRPC server.
On SIGINT or SIGTERM: not ready from then on, both front ends stop taking requests and give
those in flight up to the exit timeout, then the gateway stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import functools
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .settings import Settings, load_settings
from .sockets import ListenError, url_host, listen

if TYPE_CHECKING:
    from .grpc.server import GrpcServer
    from .server import Gateway
    from .workers import WorkerSlot

log = logging.getLogger("tunegate.gateway")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The flags are a few of the settings; the help says where the rest are, as a user asks it.
    parser.epilog = ("Every other setting (the runtime, the loop's triggers and canaries, the leader, tracing) "
                     "comes from --config FILE or TUNEGATE_* variables, e.g. TUNEGATE_LOOP__TRIGGER=samples: "
                     "see docs/reference/settings.md.")
    parser.add_argument("--repo", help="model repository to serve (env TUNEGATE_REPO)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default 8000; 0 picks a free one)")
    parser.add_argument("--grpc-port", type=int, help="gRPC port (default 8001; 0 turns gRPC off)")
    parser.add_argument("--config", metavar="FILE", help="settings file: .toml, .json (or .yaml with PyYAML)")
    parser.add_argument("--model-control", choices=["poll", "explicit", "none"],
                        help="poll: follow the repository (default); explicit: load via the API; none: static")
    parser.add_argument("--provider", choices=["auto", "cuda", "cpu"], help="execution provider for every model")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--strict-readiness", action=argparse.BooleanOptionalAction, default=None,
                        help="/v2/health/ready only when every model that should load is ready (default: on)")
    parser.add_argument("--exit-on-error", action="store_true", default=None,
                        help="exit (status 1) when a model fails its initial load, instead of serving the rest")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="serving processes sharing both ports (default 1; docs/guides/scale-out.md)")


def settings_from(args: argparse.Namespace) -> Settings:
    """The flags given (None: not given) over the environment, the config file and the defaults."""
    overrides = {"repo": args.repo, "host": args.host, "port": args.port, "grpc_port": args.grpc_port,
                 "model_control": args.model_control,
                 "log_level": args.log_level, "strict_readiness": args.strict_readiness,
                 "exit_on_error": args.exit_on_error, "workers": args.workers}
    if args.provider:
        overrides["runtime"] = {"provider": args.provider}  # merged into the file's [runtime] table
    return load_settings(args.config, **overrides)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings.workers > 1:
        from .workers import run_workers

        _log_to_stderr(settings, "")
        return run_workers(settings, serve_worker)
    _log_to_stderr(settings, "")
    # Bound before any model loads: a port clash is told in one line at once, not after
    # minutes of loading.
    sock = listen(settings.host, settings.port)
    _run(settings, sock, None)
    return 0


def serve_worker(settings: Settings, worker: WorkerSlot) -> None:
    """One of ``--workers N`` (the supervisor's child): the same server, on shared ports."""
    _log_to_stderr(settings, f"[w{worker.index}]")
    _run(settings, listen(settings.host, settings.port, reuse_port=True), worker)


def _log_to_stderr(settings: Settings, tag: str) -> None:
    logging.basicConfig(level=settings.log_level, format=f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s")


def _run(settings: Settings, sock: socket.socket, worker: WorkerSlot | None) -> None:
    try:
        if settings.event_loop == "uvloop":
            import uvloop  # libuv's loop: measured cheaper per request than asyncio's (docs/guides/serve.md)

            uvloop.run(_serve_until_signalled(settings, sock, worker))
        else:
            asyncio.run(_serve_until_signalled(settings, sock, worker))
    finally:
        sock.close()


async def _serve_until_signalled(settings: Settings, sock: socket.socket, worker: WorkerSlot | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with serving(settings, sock, worker) as where:
        grpc = f"grpc://{where.grpc} (KServe v2 gRPC)" if where.grpc else "no gRPC (--grpc-port 0)"
        log.info("serving %s on http://%s (KServe v2 REST) and %s", settings.repo, where.http, grpc)
        await stop.wait()


@dataclass(frozen=True)
class Serving:
    gateway: Gateway
    http: str  # host:port
    grpc: str | None  # host:port, None: gRPC off


@contextlib.asynccontextmanager
async def serving(settings: Settings, sock: socket.socket, worker: WorkerSlot | None = None) -> AsyncIterator[Serving]:
    """Both front ends over one gateway, HTTP on ``sock`` and gRPC on ``settings.grpc_port``
    (0: off), until the block ends; then a graceful stop (see the module's docstring). As
    one of several ``worker``s, the ports are shared and metrics summed over the workers."""
    from aiohttp import web  # aiohttp, grpc, onnxruntime and friends: after the cheap checks

    from .http.app import AccessLogger, create_app
    from .server import Gateway

    gateway = Gateway.build(settings)
    shared = worker is not None
    grpc_server = _bind_grpc(gateway, settings.host, settings.grpc_port, shared) if settings.grpc_port else None
    stops = []
    grpc_started = False
    try:
        async with _sibling_workers(gateway, worker), gateway.running():
            app = create_app(settings, gateway=gateway)
            runner = web.AppRunner(app, handler_cancellation=True, access_log_class=AccessLogger,
                                   access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
                                   shutdown_timeout=settings.exit_timeout_seconds)
            await runner.setup()
            stops.append(runner.cleanup)
            try:
                await web.SockSite(runner, sock).start()
                if grpc_server is not None:
                    await grpc_server.start()
                    grpc_started = True
                    stops.append(functools.partial(grpc_server.stop, settings.exit_timeout_seconds))
                yield Serving(gateway, url_host(sock.getsockname()),
                                url_host((settings.host, grpc_server.port)) if grpc_server else None)
            finally:
                gateway.begin_shutdown()  # not ready; queued requests run without waiting for batches
                await asyncio.gather(*(stop() for stop in stops))  # both front ends drain at once
    finally:
        if grpc_server is not None and not grpc_started:  # bound, never started: let the port go
            await grpc_server.server.stop(None)


@contextlib.asynccontextmanager
async def _sibling_workers(gateway: Gateway, worker: WorkerSlot | None) -> AsyncIterator[None]:
    """As one of several workers: our metrics served to the others, theirs summed into ours."""
    if worker is None:
        yield
        return
    from .http.worker_peers import WorkerPeers

    peers = WorkerPeers(Path(worker.run_dir), worker.index, worker.count)
    await peers.start(gateway.metrics)
    gateway.peer_metrics = peers.fetch
    try:
        yield
    finally:
        await peers.close()


def _bind_grpc(gateway: Gateway, host: str, port: int, shared: bool) -> GrpcServer:
    from .grpc.server import BindError, GrpcServer

    # grpc logs a failed bind as a C++ log line and tells only that it failed: a plain
    # socket on the same address first says why, in one line of ours.
    with contextlib.closing(listen(host, port, flag="--grpc-port", reuse_port=shared)):
        pass
    try:
        return GrpcServer.bind(gateway, host, port, reuse_port=shared)
    except BindError:  # taken in between
        raise ListenError(f"cannot listen on {url_host((host, port))} for gRPC; choose another port with "
                          "--grpc-port N, or --grpc-port 0 to serve HTTP only") from None
