"""The gateway's autoscaler both ways: the CPU HPA (default and fallback) and KEDA's
ScaledObject on queue depth or queue time. KEDA's CRD has no schema in kubernetes-validate,
so its shape is checked here against what KEDA's CRD requires (scaleTargetRef, triggers
with string-valued metadata) and what its Prometheus scaler reads; its PromQL names only
series a real gateway exposes."""

from __future__ import annotations

import re
import subprocess

import pytest
from prometheus_client import generate_latest

from gateway.core.metrics import build_registry
from gateway.core.stats import StatsBook

from .conftest import CHART, CI_VALUES, find, render

QUEUE_VALUES = next(p for p in CI_VALUES if p.stem == "queue-autoscaling-values")


def _scalers(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]


def _check_scaled_object(docs: list[dict]) -> dict:
    (so,) = _scalers(docs)
    assert (so["apiVersion"], so["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    deployment = find(docs, "Deployment", "-gateway")
    assert "replicas" not in deployment["spec"]  # KEDA's HPA sets it; a chart value would fight it
    ref = so["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", deployment["metadata"]["name"])
    assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
    for trigger in so["spec"]["triggers"]:
        assert set(trigger) <= {"type", "name", "metricType", "metadata", "authenticationRef", "useCachedMetrics"}
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger  # the CRD's type
        if trigger["type"] in ("cpu", "memory"):
            assert trigger["metricType"] == "Utilization"
            container = trigger["metadata"]["containerName"]
            assert container in [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    return so


def _prometheus(so: dict) -> dict:
    (trigger,) = [t for t in so["spec"]["triggers"] if t["type"] == "prometheus"]
    assert {"serverAddress", "query", "threshold"} <= set(trigger["metadata"])
    float(trigger["metadata"]["threshold"])
    return trigger


def _exposed_names() -> set[str]:
    book = StatsBook()
    book.get("m", 1)
    text = generate_latest(build_registry(book, lambda: [])).decode()
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line and line[0] != "#"}


def test_the_default_is_the_cpu_hpa(rendered):
    (hpa,) = _scalers(rendered["default"])
    assert hpa["kind"] == "HorizontalPodAutoscaler"
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]


def test_queue_depth_through_keda(rendered):
    docs = rendered["queue-autoscaling-values"]
    so = _check_scaled_object(docs)
    trigger = _prometheus(so)
    assert trigger["metricType"] == "AverageValue" and trigger["metadata"]["threshold"] == "8"
    service = find(docs, "Service", "-gateway")["metadata"]["name"]
    assert trigger["metadata"]["query"] == (
        f'sum(nv_inference_pending_request_count{{namespace="ml",service="{service}"}})')
    assert find(docs, "ServiceMonitor")["spec"]["endpoints"][0]["path"] == "/metrics"
    # The CPU target stays as a second trigger; the fallback holds replicas if Prometheus fails.
    assert [t["metadata"]["value"] for t in so["spec"]["triggers"] if t["type"] == "cpu"] == ["70"]
    assert so["spec"]["fallback"] == {"failureThreshold": 3, "replicas": 4}
    assert so["spec"]["maxReplicaCount"] == 12


def test_queue_time_through_keda(helm):
    docs = render(helm, QUEUE_VALUES, sets=("gateway.autoscaling.queue.metric=time",
                                            "gateway.autoscaling.queue.fallbackReplicas=null",
                                            "gateway.autoscaling.targetCPUUtilizationPercentage=null",
                                            "gateway.autoscaling.queue.seriesSelector=job=\"gw\""))
    so = _check_scaled_object(docs)
    trigger = _prometheus(so)
    assert trigger["metricType"] == "Value" and trigger["metadata"]["threshold"] == "50"
    assert [t["type"] for t in so["spec"]["triggers"]] == ["prometheus"]
    assert "fallback" not in so["spec"]
    query = trigger["metadata"]["query"]
    assert query.count('{job="gw"}[1m]') == 2


@pytest.mark.parametrize("metric", ["depth", "time"])
def test_the_queries_name_series_the_gateway_exposes(helm, metric):
    docs = render(helm, QUEUE_VALUES, sets=(f"gateway.autoscaling.queue.metric={metric}",
                                            "gateway.autoscaling.queue.fallbackReplicas=null"))
    query = _prometheus(_check_scaled_object(docs))["metadata"]["query"]
    names = set(re.findall(r"\b(nv_[a-z_]+)\{", query))
    assert names and names <= _exposed_names()


def test_the_schema_refuses_bad_autoscaler_values(helm):
    for bad in ("gateway.autoscaling.mode=keda", "gateway.autoscaling.queue.metric=p99",
                "gateway.autoscaling.queue.window=60", "gateway.autoscaling.queue.targetPendingPerReplica=0",
                "gateway.autoscaling.queue.prometheusAddress=prometheus:9090"):
        proc = subprocess.run([helm, "lint", str(CHART), "--set", bad], capture_output=True, text=True)
        assert proc.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in proc.stdout + proc.stderr, bad
    # KEDA's fallback needs an AverageValue metric: refused with the queue-time metric.
    proc = subprocess.run([helm, "lint", str(CHART), "-f", str(QUEUE_VALUES),
                           "--set", "gateway.autoscaling.queue.metric=time"], capture_output=True, text=True)
    assert proc.returncode != 0


def test_autoscaling_off_renders_neither(helm):
    docs = render(helm, sets=("gateway.autoscaling.enabled=false", "gateway.autoscaling.mode=queue"))
    assert _scalers(docs) == []
    assert find(docs, "Deployment", "-gateway")["spec"]["replicas"] >= 1
