"""``tunegate serve`` as a real subprocess, with gRPC: both ports named in its log line, the
official gRPC client answered, a clean exit on SIGTERM, and a taken gRPC port told in one
line before any model loads."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from model_repo import Repository
from model_repo.triton import free_port

from . import models
from .conftest import wait_for


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("TUNEGATE_")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Repository:
    repo = Repository(tmp_path_factory.mktemp("grpc-cli") / "repo")
    models.publish(repo, "mlp", models.mlp_fp32(), models.mlp_config("mlp"))
    return repo


def test_serve_answers_grpc_beside_http_and_exits_cleanly(repo):
    grpc_port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tunegate_cli", "serve", "--repo", str(repo.root), "--port", "0",
                               "--grpc-port", str(grpc_port), "--provider", "cpu"], stderr=subprocess.PIPE, text=True,
                              env=_env())
    try:
        match = None
        for line in server.stderr:
            match = re.search(r"serving .* on http://127\.0\.0\.1:(\d+) \(KServe v2 REST\) and "
                              r"grpc://127\.0\.0\.1:(\d+) \(KServe v2 gRPC\)", line)
            if match:
                break
        assert match and int(match.group(1)) > 0 and int(match.group(2)) == grpc_port
        with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
            assert client.is_server_live()
            tensor = grpcclient.InferInput("X", [1, 4], "FP32")
            tensor.set_data_from_numpy(np.zeros((1, 4), np.float32))
            wait_for(lambda: client.is_model_ready("mlp"), what="mlp loaded")  # loads in the background
            assert client.infer("mlp", [tensor]).as_numpy("SUM").tolist() == [[1.0] * 4]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        server.stderr.close()
    assert server.returncode == 0


@contextlib.contextmanager
def _held_by_socket() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        yield holder.getsockname()[1]


@contextlib.contextmanager
def _held_by_grpc() -> Iterator[int]:
    """A port held by a plain grpc server, which sets SO_REUSEPORT: a second server that set
    it too would share the port without a word."""
    holder = grpc.server(futures.ThreadPoolExecutor(1))
    port = holder.add_insecure_port("127.0.0.1:0")
    holder.start()
    try:
        yield port
    finally:
        holder.stop(None)


@pytest.mark.parametrize("held_by", [_held_by_socket, _held_by_grpc], ids=["socket", "grpc-server"])
def test_a_taken_grpc_port_is_one_line_before_any_model_loads(repo, held_by):
    with held_by() as port:
        result = subprocess.run([sys.executable, "-m", "tunegate_cli", "serve", "--repo", str(repo.root),
                                 "--port", "0", "--grpc-port", str(port)], capture_output=True, text=True,
                                timeout=120, env=_env())
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"tunegate serve: error: cannot listen on 127.0.0.1:{port}: the gRPC port is "
                               "already in use"), lines[0]
    assert "--grpc-port N" in lines[0] and "--grpc-port 0" in lines[0]


def test_the_grpc_server_never_shares_a_port_with_another(tmp_path):
    """grpc sets SO_REUSEPORT unless told not to: two gateways would split one port's calls."""
    import asyncio

    from gateway.grpc.server import BindError, GrpcServer
    from gateway.server import Gateway
    from gateway.settings import Settings

    async def bind(port: int) -> None:
        gateway = Gateway.build(Settings(repo=tmp_path))
        with pytest.raises(BindError, match=f"cannot listen on 127.0.0.1:{port} for gRPC"):
            GrpcServer.bind(gateway, "127.0.0.1", port)

    with _held_by_grpc() as port:
        asyncio.run(bind(port))
