"""The sockets ``tunegate serve`` listens on, bound before anything else starts, and the
one-line reason when one cannot be (a taken port, a foreign address, a privileged port)."""

from __future__ import annotations

import errno
import socket

from .core.errors import GatewayError


class ListenError(GatewayError):
    """The address cannot be listened on: an operator's choice to change, so usage's status."""

    exit_code = 2


def listen(host: str, port: int, backlog: int = 128, *, flag: str = "--port", reuse_port: bool = False,
           listening: bool = True) -> socket.socket:
    """A listening socket on ``host:port`` (the first address the name resolves to); ``flag``
    is the option that chooses the port, for the message when it cannot. ``reuse_port``:
    shared with the other workers (SO_REUSEPORT); not ``listening``: only bound, holding
    the port for them."""
    where = url_host((host, port))
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {where}: cannot resolve {host!r} ({exc.strerror}); "
                          "choose another address with --host") from None
    try:
        # SO_REUSEADDR (set by create_server), as asyncio would: a restart is not refused
        # while the previous process's connections sit in TIME_WAIT.
        if listening:
            sock = socket.create_server(address, family=family, backlog=backlog, reuse_port=reuse_port)
        else:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind(address)
            except OSError:
                sock.close()
                raise
    except OSError as exc:
        raise ListenError(f"cannot listen on {where}: {_why(exc, host, flag)}") from None
    sock.setblocking(False)
    return sock


def _why(exc: OSError, host: str, flag: str) -> str:
    if exc.errno == errno.EADDRINUSE and flag == "--grpc-port":
        return ("the gRPC port is already in use (another tunegate or Triton?); choose another with "
                "--grpc-port N (or TUNEGATE_GRPC_PORT=N; with make demo: make demo GRPC_PORT=N), or --grpc-port 0 "
                "to serve HTTP only")
    if exc.errno == errno.EADDRINUSE:
        return ("the port is already in use (another tunegate or server?); choose another with --port N "
                "(or TUNEGATE_PORT=N; with make demo: make demo PORT=N), or --port 0 for any free port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine; choose another with --host (e.g. 127.0.0.1 or 0.0.0.0)"
    if exc.errno == errno.EACCES:
        return f"permission denied (ports below 1024 need privileges); choose a port from 1024 up with {flag}"
    return f"{exc.strerror or exc}"


def url_host(sockname: tuple) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
