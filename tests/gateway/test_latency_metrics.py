"""Latency histograms on /metrics and response_stats in the statistics extension, through the
unmodified tritonclient (HTTP and gRPC) against a real gateway; removed versions' buckets
fold into ``retired``; the GPU figures are absent on a host without a GPU."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway.core.gpu_metrics import GpuCollector, _visible
from gateway.core.metrics_merge import merge_expositions
from gateway.core.stats import LATENCY_BUCKETS_US
from model_repo import Repository

from . import models
from .conftest import build_repository, wait_for
from .grpc_fixture import both_settings, serve_both

HISTOGRAMS = ("nv_inference_request_histogram_us", "nv_inference_queue_histogram_us",
              "nv_inference_compute_histogram_us")


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    build_repository(root)
    models.publish(Repository(root), "addc", models.add_const_fp32(1.0), models.add_const_config("addc"))
    with serve_both(both_settings(root)) as server:
        yield server


def _histograms(text: str, model: str) -> dict[tuple[str, str], dict]:
    """(family, version) -> {"buckets": [(le, count)], "count": n, "sum": s} for ``model``."""
    out: dict[tuple[str, str], dict] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in HISTOGRAMS:
            continue
        assert family.type == "histogram"
        for sample in family.samples:
            if sample.labels["model"] != model:
                continue
            entry = out.setdefault((family.name, sample.labels["version"]), {"buckets": []})
            if sample.name.endswith("_bucket"):
                entry["buckets"].append((float(sample.labels["le"]), sample.value))
            else:
                entry[sample.name.rsplit("_", 1)[1]] = sample.value
    return out


def _scrape(both) -> str:
    status, _, raw = both.request("GET", "/metrics")
    assert status == 200
    return raw.decode()


def _ask_mlp(both, times: int) -> None:
    x = np.ones((1, 4), np.float32)
    with contextlib.closing(both.http()) as http, contextlib.closing(both.grpc()) as grpc:
        for i in range(times):
            client, module = (http, httpclient) if i % 2 else (grpc, grpcclient)
            tensor = module.InferInput("X", [1, 4], "FP32")
            tensor.set_data_from_numpy(x)
            client.infer("mlp", [tensor])


def test_histograms_count_every_request_from_both_clients(both):
    _ask_mlp(both, 6)
    hist = _histograms(_scrape(both), "mlp")
    assert {name for name, _ in hist} == set(HISTOGRAMS)
    success = both.json("GET", "/v2/models/mlp/stats")[1]["model_stats"][0]["inference_stats"]["success"]
    for (name, version), entry in hist.items():
        assert version == "1"
        bounds = [le for le, _ in entry["buckets"]]
        counts = [count for _, count in entry["buckets"]]
        assert bounds == [*map(float, LATENCY_BUCKETS_US), float("inf")], name
        assert counts == sorted(counts), f"{name}: buckets must be cumulative"
        assert counts[-1] == entry["count"] == success["count"] >= 6, name
        assert entry["sum"] > 0, name
    # The request histogram's sum is the same time the statistics extension reports.
    request = hist[("nv_inference_request_histogram_us", "1")]
    assert request["sum"] == pytest.approx(success["ns"] / 1000)


def test_response_stats_through_both_clients(both):
    _ask_mlp(both, 4)
    with contextlib.closing(both.http()) as http, contextlib.closing(both.grpc()) as grpc:
        over_http = http.get_inference_statistics("mlp")["model_stats"][0]
        over_grpc = grpc.get_inference_statistics("mlp", as_json=True)["model_stats"][0]
    for stats in (over_http, over_grpc):
        response = stats["response_stats"]["0"]
        inference = stats["inference_stats"]
        assert int(response["success"]["count"]) == int(inference["success"]["count"]) >= 4
        assert int(response["compute_infer"]["count"]) == int(inference["compute_infer"]["count"])
        assert int(response["success"]["ns"]) == (int(inference["compute_infer"]["ns"])
                                                   + int(inference["compute_output"]["ns"]))
        assert int(response["fail"].get("count", 0)) == 0


def test_a_model_never_asked_has_no_response_stats(both):
    with contextlib.closing(both.http()) as http:
        stats = http.get_inference_statistics("bools")["model_stats"][0]
    assert stats["response_stats"] == {}


def test_removed_versions_buckets_fold_into_retired(both):
    def ask(times: int = 1) -> str:
        tensor = httpclient.InferInput("X", [1, 2], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 2), np.float32))
        with contextlib.closing(both.http()) as client:
            return [client.infer("addc", [tensor]).get_response()["model_version"] for _ in range(times)][-1]

    ask(3)
    models.publish(Repository(both.gateway.repo.root), "addc", models.add_const_fp32(2.0),
                   models.add_const_config("addc"))
    wait_for(lambda: ask() == "2", what="addc v2 answering")
    ask(2)
    wait_for(lambda: {v for _, v in _histograms(_scrape(both), "addc")} == {"2", "retired"},
             what="version 1 folded into retired")
    hist = _histograms(_scrape(both), "addc")
    stats = both.json("GET", "/v2/models/addc/stats")[1]["model_stats"]
    for name in HISTOGRAMS:
        retired, live = hist[(name, "retired")], hist[(name, "2")]
        assert retired["count"] >= 3 and live["count"] >= 3
        assert retired["buckets"][-1][1] == retired["count"]
    live_success = stats[0]["inference_stats"]["success"]["count"]
    assert hist[("nv_inference_request_histogram_us", "2")]["count"] == live_success


def test_workers_histograms_add_up_when_merged(both):
    own = both.gateway.metrics
    text = _scrape(both)
    merged = merge_expositions(own, [text]).decode()
    single, double = _histograms(text, "mlp"), _histograms(merged, "mlp")
    for key, entry in single.items():
        assert [c * 2 for _, c in entry["buckets"]] == [c for _, c in double[key]["buckets"]], key


def _gpus() -> list[str]:
    probe = GpuCollector()
    list(probe.collect())
    return probe.devices


def test_no_gpu_figures_and_no_nvml_work_without_a_gpu(both, monkeypatch):
    if _gpus():
        pytest.skip("a GPU is visible here: see test_gpu_figures_with_a_gpu")
    assert "nv_gpu_" not in _scrape(both)

    class Counting(GpuCollector):
        probes = 0

        def _probe(self):
            self.probes += 1
            return super()._probe()

    collector = Counting()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    for _ in range(3):
        assert list(collector.collect()) == []
    assert collector.probes == 1 and collector.devices == []
    # CUDA_VISIBLE_DEVICES="" hides every GPU before NVML is even loaded.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    hidden = Counting()
    assert list(hidden.collect()) == [] and hidden.devices == []


def test_gpu_figures_with_a_gpu(both):
    gpus = _gpus()
    if not gpus:
        pytest.skip("no GPU on this host (CI is CPU-only)")
    families = {f.name: f for f in text_string_to_metric_families(_scrape(both))}
    by_gpu = {name: {s.labels["gpu_uuid"]: s.value for s in families[name].samples}
              for name in ("nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes")}
    for uuid in gpus:
        assert 0.0 <= by_gpu["nv_gpu_utilization"][uuid] <= 1.0
        assert 0 < by_gpu["nv_gpu_memory_used_bytes"][uuid] <= by_gpu["nv_gpu_memory_total_bytes"][uuid]


def test_cuda_visible_devices_picks_gpus_as_cuda_does():
    devices = [("GPU-aaa", 0), ("GPU-bbb", 1), ("GPU-ccc", 2)]
    assert _visible(devices, None) == devices
    assert _visible(devices, "2,0") == [("GPU-ccc", 2), ("GPU-aaa", 0)]
    assert _visible(devices, "GPU-bb") == [("GPU-bbb", 1)]
    assert _visible(devices, "1,7,0") == [("GPU-bbb", 1)]  # CUDA stops at the first bad entry
