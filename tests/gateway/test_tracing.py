"""OpenTelemetry traces of inference requests, over both front ends, received by a real
OTLP/HTTP receiver (and, for the batch's links, the SDK's in-memory exporter)."""

from __future__ import annotations

import concurrent.futures
import contextlib

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from model_repo import Repository

from . import models
from .grpc_fixture import both_settings, serve_both
from .otlp_receiver import receiving

pytestmark = pytest.mark.timeout(120)
ROWS = 4  # the batched model's max_batch_size: that many concurrent requests run as one batch


@pytest.fixture(scope="module")
def repo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("traced")
    repo = Repository(root)
    models.publish(repo, "mlp", models.mlp_fp32(), models.mlp_config("mlp"))
    # A long delay: only a full batch (ROWS requests) runs before it, so they merge.
    models.publish(repo, "merged", models.mlp_fp32(), models.mlp_config("merged", delay_us=10_000_000,
                                                                          max_batch_size=ROWS))
    return root


def _x(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 4), dtype=np.float32)


def _http_infer(url: str, model: str, traceparent: str | None = None, seed: int = 0) -> None:
    with contextlib.closing(httpclient.InferenceServerClient(url)) as client:
        tensor = httpclient.InferInput("X", [1, 4], "FP32")
        tensor.set_data_from_numpy(_x(seed), binary_data=True)
        client.infer(model, [tensor], headers={"traceparent": traceparent} if traceparent else None)


def _grpc_infer(url: str, model: str, traceparent: str) -> None:
    with contextlib.closing(grpcclient.InferenceServerClient(url)) as client:
        tensor = grpcclient.InferInput("X", [1, 4], "FP32")
        tensor.set_data_from_numpy(_x())
        client.infer(model, [tensor], headers={"traceparent": traceparent})


def _tree(spans, trace_id: int) -> dict[str, object]:
    """The trace's spans by name (each name once in one request's trace)."""
    mine = [s for s in spans if int.from_bytes(s.trace_id, "big") == trace_id]
    by_name = {s.name: s for s in mine}
    assert len(by_name) == len(mine), [s.name for s in mine]
    return by_name


def test_traces_of_both_front_ends_reach_an_otlp_receiver_under_the_clients_trace_id(repo_root):
    http_trace, http_parent = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7
    grpc_trace, grpc_parent = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    with receiving() as receiver:
        settings = both_settings(repo_root, tracing={"endpoint": receiver.endpoint, "service_name": "tg-test",
                                                     "export_delay_seconds": 0.1})
        with serve_both(settings) as both:
            _http_infer(both.http_url, "mlp", f"00-{http_trace:032x}-{http_parent:016x}-01")
            _grpc_infer(both.grpc_url, "mlp", f"00-{grpc_trace:032x}-{grpc_parent:016x}-01")
        # Leaving serve_both closed the gateway, which exports every finished span.
        with receiver.lock:
            spans = list(receiver.spans)
            assert receiver.services == {"tg-test"}

    http = _tree(spans, http_trace)
    assert set(http) == {"infer", "receive", "decode", "queue", "batch", "compute", "encode"}
    root = http["infer"]
    assert int.from_bytes(root.parent_span_id, "big") == http_parent  # the client's span is its parent
    for name in ("receive", "decode", "queue", "batch", "encode"):
        assert http[name].parent_span_id == root.span_id, name
    assert http["compute"].parent_span_id == http["batch"].span_id
    assert [link.span_id for link in http["batch"].links] == [root.span_id]
    # Phases follow each other in time inside the request's span.
    assert root.start_time_unix_nano <= http["receive"].start_time_unix_nano
    assert http["receive"].end_time_unix_nano <= http["decode"].end_time_unix_nano
    assert http["queue"].end_time_unix_nano <= http["compute"].start_time_unix_nano
    assert http["compute"].end_time_unix_nano <= http["encode"].start_time_unix_nano
    assert http["encode"].end_time_unix_nano <= root.end_time_unix_nano
    attributes = {a.key: a.value.string_value for a in root.attributes}
    assert attributes["model.name"] == "mlp" and attributes["model.version"] == "1"

    grpc = _tree(spans, grpc_trace)  # gRPC has received the message before the handler runs
    assert set(grpc) == {"infer", "decode", "queue", "batch", "compute", "encode"}
    assert int.from_bytes(grpc["infer"].parent_span_id, "big") == grpc_parent


@pytest.fixture
def traced(repo_root):
    """A gateway tracing into the SDK's in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with serve_both(both_settings(repo_root)) as both:
        both.call(lambda: both.gateway.dataplane.tracing.use(provider))
        yield both, exporter


def test_the_batch_span_links_every_request_it_merged(traced):
    both, exporter = traced
    with concurrent.futures.ThreadPoolExecutor(ROWS) as pool:
        list(pool.map(lambda seed: _http_infer(both.http_url, "merged", seed=seed), range(ROWS)))
    spans = exporter.get_finished_spans()
    batches = [s for s in spans if s.name == "batch"]
    roots = {s.context.span_id: s for s in spans if s.name == "infer"}
    assert len(batches) == 1 and len(roots) == ROWS
    batch = batches[0]
    assert sorted(link.context.span_id for link in batch.links) == sorted(roots)
    assert batch.attributes["batch.requests"] == ROWS and batch.attributes["batch.rows"] == ROWS
    assert batch.parent.span_id in roots  # it lives in the first request's trace
    queues = [s for s in spans if s.name == "queue"]
    assert sorted(q.parent.span_id for q in queues) == sorted(roots)
    assert all(q.end_time <= batch.start_time for q in queues)


def test_trace_settings_decide_what_is_traced(traced):
    both, exporter = traced
    http = both.http()
    assert http.get_trace_settings()["trace_level"] == ["TIMESTAMPS"]
    # trace_count: two traces, then tracing stops by itself.
    assert http.update_trace_settings(settings={"trace_count": "2"})["trace_count"] == "2"
    for seed in range(4):
        _http_infer(both.http_url, "mlp", seed=seed)
    assert len([s for s in exporter.get_finished_spans() if s.name == "infer"]) == 2
    assert http.get_trace_settings()["trace_count"] == "0"
    assert both.call(lambda: both.gateway.dataplane.tracing.active) is False
    exporter.clear()
    # A model's own level and rate, over gRPC: one request in 3 of "mlp"; the global level OFF.
    grpc = both.grpc()
    http.update_trace_settings(settings={"trace_count": "-1", "trace_level": ["OFF"]})
    answer = grpc.update_trace_settings("mlp", {"trace_level": ["TIMESTAMPS"], "trace_rate": "3"}, as_json=True)
    assert answer["settings"]["trace_rate"]["value"] == ["3"]
    assert answer["settings"]["trace_level"]["value"] == ["TIMESTAMPS"]
    assert http.get_trace_settings()["trace_level"] == ["OFF"]
    for seed in range(6):
        _http_infer(both.http_url, "mlp", seed=seed)
    assert len([s for s in exporter.get_finished_spans() if s.name == "infer"]) == 2
    # Clearing a field (None) makes the model follow the global setting again.
    assert http.update_trace_settings("mlp", {"trace_level": None})["trace_level"] == ["OFF"]
    assert both.call(lambda: both.gateway.dataplane.tracing.active) is False


def test_trace_settings_refuse_what_they_cannot_honour(traced):
    both, _ = traced
    http = both.http()
    for bad in ({"trace_level": ["LOUD"]}, {"trace_rate": "0"}, {"trace_count": "-2"}, {"trace_file": "/tmp/x"},
                {"no_such_setting": "1"}):
        with pytest.raises(httpclient.InferenceServerException) as caught:
            http.update_trace_settings(settings=bad)
        assert caught.value.status() == "400", bad
    with pytest.raises(grpcclient.InferenceServerException) as caught:
        both.grpc().update_trace_settings(settings={"trace_rate": "x"})
    assert "INVALID_ARGUMENT" in caught.value.status()
    assert http.get_trace_settings()["trace_rate"] == "1"  # nothing changed
    assert {"trace", "logging"} <= set(http.get_server_metadata()["extensions"])
