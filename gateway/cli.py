"""``tunegate serve``: serve the repository over HTTP (KServe v2 / Triton protocol)."""

from __future__ import annotations

import argparse
import errno
import logging
import socket

from aiohttp import web

from .core.errors import GatewayError
from .settings import Settings, load_settings


class ListenError(GatewayError):
    """The address cannot be listened on: an operator's choice to change, so usage's status."""

    exit_code = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", help="model repository to serve (env TUNEGATE_REPO)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default 8000; 0 picks a free one)")
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
    overrides = {"repo": args.repo, "host": args.host, "port": args.port, "model_control": args.model_control,
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
    address = _url_host(sock.getsockname())
    from .http.app import AccessLogger, create_app  # onnxruntime and friends: after the cheap checks

    app = create_app(settings)
    try:
        web.run_app(
            app,
            sock=sock,
            shutdown_timeout=settings.exit_timeout_seconds,
            access_log_class=AccessLogger,
            access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
            print=lambda text: logging.getLogger("tunegate.gateway").info(
                "serving %s on http://%s (KServe v2)", settings.repo, address),
        )
    finally:
        sock.close()
    return 0


def listen(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A listening socket on ``host:port`` (the first address the name resolves to)."""
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
        raise ListenError(f"cannot listen on {where}: {_why(exc, host)}") from None
    sock.setblocking(False)
    return sock


def _why(exc: OSError, host: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return ("the port is already in use (another tunegate or server?); choose another with --port N "
                "(or TUNEGATE_PORT=N; with make demo: make demo PORT=N), or --port 0 for any free port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine; choose another with --host (e.g. 127.0.0.1 or 0.0.0.0)"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges); choose a port from 1024 up with --port"
    return f"{exc.strerror or exc}"


def _url_host(sockname: tuple) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
