"""Real tritonserver processes for tests (the binary from the ``nvidia-pytriton`` wheel).

``make test`` installs the binary (packaging/setup.sh); a test that needs it fails, naming
the install line, when it is missing, so a broken set-up cannot pass as skipped tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_repo.triton import STUB_PACKAGES_HINT, TritonServer, default_stub_packages, find_tritonserver

INSTALL_HINT = "pip install --no-deps nvidia-pytriton==0.7.0"


def require_tritonserver():
    install = find_tritonserver()
    if install is None:
        pytest.fail(f"no tritonserver binary (packaging/setup.sh installs it): {INSTALL_HINT}")
    if default_stub_packages() is None:
        pytest.fail(f"tritonserver found but not the stub's numpy<2: {STUB_PACKAGES_HINT}")
    return install


@contextlib.contextmanager
def tritonserver(view: Path, *, poll_seconds: float | None = 1, port: int | None = None,
                 grpc_port: int | None = None, **kwargs) -> Iterator[TritonServer]:
    """A started tritonserver serving HTTP and gRPC (``--grpc-port``, each on a free port
    unless given), stopped on exit."""
    server = TritonServer(require_tritonserver(), view, poll_seconds=poll_seconds, **kwargs)
    if port is not None:
        server.http_port = port
    if grpc_port is not None:
        server.grpc_port = grpc_port
    server.start()
    try:
        yield server
    finally:
        server.stop()


def grpc_url(server: TritonServer) -> str:
    """The server's gRPC service as a gateway endpoint (``triton.endpoints``)."""
    return f"grpc://127.0.0.1:{server.grpc_port}"
