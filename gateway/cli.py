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
import errno
import logging
import functools
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .core.errors import GatewayError
from .settings import Settings, load_settings

if TYPE_CHECKING:
    from .grpc.server import GrpcServer
    from .server import Gateway

log = logging.getLogger("tunegate.gateway")


class ListenError(GatewayError):
    """The address cannot be listened on: an operator's choice to change, so usage's status."""

    exit_code = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def settings_from(args: argparse.Namespace) -> Settings:
    """The flags given (None: not given) over the environment, the config file and the defaults."""
    overrides = {"repo": args.repo, "host": args.host, "port": args.port, "grpc_port": args.grpc_port,
                 "model_control": args.model_control,
                 "log_level": args.log_level, "strict_readiness": args.strict_readiness,
                 "exit_on_error": args.exit_on_error}
    if args.provider:
        overrides["runtime"] = {"provider": args.provider}  # merged into the file's [runtime] table
    return load_settings(args.config, **overrides)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Bound before any model loads: a port clash is told in one line at once, not after
    # minutes of loading.
    sock = listen(settings.host, settings.port)
    try:
        if settings.event_loop == "uvloop":
            import uvloop  # libuv's loop: measured cheaper per request than asyncio's (README, Serve)

            uvloop.run(_serve_until_signalled(settings, sock))
        else:
            asyncio.run(_serve_until_signalled(settings, sock))
    finally:
        sock.close()
    return 0


async def _serve_until_signalled(settings: Settings, sock: socket.socket) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with serving(settings, sock) as where:
        grpc = f"grpc://{where.grpc} (KServe v2 gRPC)" if where.grpc else "no gRPC (--grpc-port 0)"
        log.info("serving %s on http://%s (KServe v2 REST) and %s", settings.repo, where.http, grpc)
        await stop.wait()


@dataclass(frozen=True)
class Serving:
    gateway: Gateway
    http: str  # host:port
    grpc: str | None  # host:port, None: gRPC off


@contextlib.asynccontextmanager
async def serving(settings: Settings, sock: socket.socket) -> AsyncIterator[Serving]:
    """Both front ends over one gateway, HTTP on ``sock`` and gRPC on ``settings.grpc_port``
    (0: off), until the block ends; then a graceful stop (see the module's docstring)."""
    from aiohttp import web  # aiohttp, grpc, onnxruntime and friends: after the cheap checks

    from .http.app import AccessLogger, create_app
    from .server import Gateway

    gateway = Gateway.build(settings)
    grpc_server = _bind_grpc(gateway, settings.host, settings.grpc_port) if settings.grpc_port else None
    stops = []
    try:
        async with gateway.running():
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
                    stops.append(functools.partial(grpc_server.stop, settings.exit_timeout_seconds))
                yield Serving(gateway, _url_host(sock.getsockname()),
                                _url_host((settings.host, grpc_server.port)) if grpc_server else None)
            finally:
                gateway.begin_shutdown()  # not ready; queued requests run without waiting for batches
                await asyncio.gather(*(stop() for stop in stops))  # both front ends drain at once
    finally:
        if grpc_server is not None and len(stops) < 2:  # bound, never started: let the port go
            await grpc_server.server.stop(None)


def _bind_grpc(gateway: Gateway, host: str, port: int) -> GrpcServer:
    from .grpc.server import BindError, GrpcServer

    # grpc logs a failed bind as a C++ log line and tells only that it failed: a plain
    # socket on the same address first says why, in one line of ours.
    with contextlib.closing(listen(host, port, flag="--grpc-port")):
        pass
    try:
        return GrpcServer.bind(gateway, host, port)
    except BindError:  # taken in between
        raise ListenError(f"cannot listen on {_url_host((host, port))} for gRPC; choose another port with "
                          "--grpc-port N, or --grpc-port 0 to serve HTTP only") from None


def listen(host: str, port: int, backlog: int = 128, *, flag: str = "--port") -> socket.socket:
    """A listening socket on ``host:port`` (the first address the name resolves to); ``flag``
    is the option that chooses the port, for the message when it cannot."""
    where = _url_host((host, port))
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {where}: cannot resolve {host!r} ({exc.strerror}); "
                          "choose another address with --host") from None
    try:
        # SO_REUSEADDR (set by create_server), as asyncio would: a restart is not refused
        # while the previous process's connections sit in TIME_WAIT.
        sock = socket.create_server(address, family=family, backlog=backlog)
    except OSError as exc:
        raise ListenError(f"cannot listen on {where}: {_why(exc, host, flag)}") from None
    sock.setblocking(False)
    return sock


def _why(exc: OSError, host: str, flag: str) -> str:
    if exc.errno == errno.EADDRINUSE and flag == "--grpc-port":
        return ("the gRPC port is already in use (another tunegate or Triton?); choose another with "
                "--grpc-port N (or TUNEGATE_GRPC_PORT=N), or --grpc-port 0 to serve HTTP only")
    if exc.errno == errno.EADDRINUSE:
        return ("the port is already in use (another tunegate or server?); choose another with --port N "
                "(or TUNEGATE_PORT=N; with make demo: make demo PORT=N), or --port 0 for any free port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine; choose another with --host (e.g. 127.0.0.1 or 0.0.0.0)"
    if exc.errno == errno.EACCES:
        return f"permission denied (ports below 1024 need privileges); choose a port from 1024 up with {flag}"
    return f"{exc.strerror or exc}"


def _url_host(sockname: tuple) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
