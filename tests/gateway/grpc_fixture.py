"""A real gateway with both front ends (HTTP and gRPC over one Gateway), wired exactly as
``tunegate serve`` wires them (``gateway.cli.serving``), in its own thread and event loop,
so tests can use the official synchronous clients of both protocols."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper

from gateway.cli import serving
from gateway.sockets import listen
from gateway.server import Gateway
from gateway.settings import Settings
from model_repo import Repository, TensorSpec, make_config
from model_repo.triton import free_port

from . import loop_models, models
from .models import DATATYPE_CASES as CASES
from .conftest import build_repository, http_json, http_request, make_settings, wait_for

# What an onnxruntime model can echo: its string tensors hold UTF-8 text only.
ECHO_CASES = {**CASES, "BYTES": np.array([[b"", b"raw", "h\xe9llo".encode()]], dtype=object)}
_ONNX_TYPES = {"BOOL": TensorProto.BOOL, "UINT8": TensorProto.UINT8, "UINT16": TensorProto.UINT16,
               "UINT32": TensorProto.UINT32, "UINT64": TensorProto.UINT64, "INT8": TensorProto.INT8,
               "INT16": TensorProto.INT16, "INT32": TensorProto.INT32, "INT64": TensorProto.INT64,
               "FP16": TensorProto.FLOAT16, "FP32": TensorProto.FLOAT, "FP64": TensorProto.DOUBLE,
               "BYTES": TensorProto.STRING}


def echo_model() -> bytes:
    """OUT_<T> = IN_<T> for every datatype (shape [1, 3], no batching)."""
    nodes = [helper.make_node("Identity", [f"IN_{t}"], [f"OUT_{t}"]) for t in CASES]
    graph = helper.make_graph(nodes, "echo",
                              [helper.make_tensor_value_info(f"IN_{t}", _ONNX_TYPES[t], [1, 3]) for t in CASES],
                              [helper.make_tensor_value_info(f"OUT_{t}", _ONNX_TYPES[t], [1, 3]) for t in CASES])
    return models._save(graph)


def echo_config(name: str):
    return make_config(name, [TensorSpec(f"IN_{t}", t, (1, 3)) for t in CASES],
                       [TensorSpec(f"OUT_{t}", t, (1, 3)) for t in CASES])


def build_both_repository(root: Path) -> Repository:
    """conftest's models, the all-datatype echo, and a classifier for feedback."""
    repo = build_repository(root)
    models.publish(repo, "echo", echo_model(), echo_config("echo"))
    loop_models.publish(repo, "clf", loop_models.classifier())
    return repo


@dataclass
class Both:
    gateway: Gateway
    loop: asyncio.AbstractEventLoop
    http_url: str
    grpc_url: str

    def grpc(self, **kwargs) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(self.grpc_url, **kwargs)

    def http(self, **kwargs) -> httpclient.InferenceServerClient:
        return httpclient.InferenceServerClient(self.http_url, **kwargs)

    def call(self, coro_or_fn, timeout: float = 60):
        """Run a coroutine (or a plain function) on the server's loop and return its result."""
        async def wrap():
            result = coro_or_fn() if callable(coro_or_fn) else coro_or_fn
            return await result if asyncio.iscoroutine(result) else result
        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return http_request(self.http_url, method, path, body, headers)

    def json(self, method: str, path: str, doc=None, headers=None) -> tuple[int, dict]:
        return http_json(self.http_url, method, path, doc, headers)


@contextlib.contextmanager
def serve_both(settings: Settings) -> Iterator[Both]:
    """Both front ends on ``settings.port`` and ``settings.grpc_port``, once ready."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gateway", daemon=True)
    thread.start()
    started: concurrent.futures.Future = concurrent.futures.Future()
    stop = asyncio.Event()

    async def main() -> None:
        sock = listen("127.0.0.1", settings.port)
        try:
            async with serving(settings, sock) as where:
                started.set_result(where)
                await stop.wait()
        finally:
            sock.close()

    task = asyncio.run_coroutine_threadsafe(main(), loop)
    task.add_done_callback(lambda t: started.done() or started.set_exception(
        t.exception() or RuntimeError("the gateway stopped before serving")))
    where = started.result(60)
    both = Both(where.gateway, loop, where.http, where.grpc)
    try:
        with contextlib.closing(both.grpc()) as client:
            wait_for(client.is_server_ready, what="server ready")
        yield both
    finally:
        loop.call_soon_threadsafe(stop.set)
        task.result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def both_settings(root: Path, **kwargs) -> Settings:
    return make_settings(root, grpc_port=free_port(), **kwargs)
