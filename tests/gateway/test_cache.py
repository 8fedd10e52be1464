"""Triton's response cache through the unmodified tritonclient (HTTP and gRPC) against a real
gateway: hits answer bit-exact, a new version is never answered from the old one's entries,
the byte bound evicts, and the counts show in statistics and metrics."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from gateway.core.cache import ResponseCache, answer_bytes, request_key
from gateway.core.types import InputTensor
from model_repo import Repository

from . import models
from .conftest import wait_for
from .grpc_fixture import both_settings, serve_both

X = np.array([[0.5, -1.0, 2.0, 0.25]], np.float32)


def cached_config(name: str):
    config = models.mlp_config(name)
    config.response_cache.enable = True
    return config


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache_repo")
    repo = Repository(root)
    models.publish(repo, "cached", models.mlp_fp32(), cached_config("cached"))
    models.publish(repo, "plain", models.mlp_fp32(), models.mlp_config("plain"))  # the reference answers
    # Room for a handful of one-row answers (OUT + SUM: 28 bytes and the entry overhead each).
    settings = both_settings(root, response_cache_bytes=4 * answer_bytes(
        {"OUT": np.zeros((1, 3), np.float32), "SUM": np.zeros((1, 4), np.float32)}))
    with serve_both(settings) as server:
        yield server


def http_infer(client, model: str, x: np.ndarray, binary: bool = True):
    inp = httpclient.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("OUT", "SUM")]
    result = client.infer(model, [inp], outputs=outputs)
    return result.as_numpy("OUT"), result.as_numpy("SUM"), result.get_response()["model_version"]


def grpc_infer(client, model: str, x: np.ndarray):
    inp = grpcclient.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp])
    return result.as_numpy("OUT"), result.as_numpy("SUM"), result.get_response().model_version


def cache_stats(client, model: str) -> dict:
    stats = client.get_inference_statistics(model)["model_stats"]
    total = {"hit": 0, "miss": 0, "success": 0, "inference_count": 0}
    for entry in stats:
        total["hit"] += int(entry["inference_stats"]["cache_hit"]["count"])
        total["miss"] += int(entry["inference_stats"]["cache_miss"]["count"])
        total["success"] += int(entry["inference_stats"]["success"]["count"])
        total["inference_count"] += int(entry["inference_count"])
    return total


def test_repeated_requests_hit_and_answer_bit_exact_over_both_protocols(both):
    x = X + 10  # a request no other test sends
    with contextlib.closing(both.http()) as http, contextlib.closing(both.grpc()) as grpc:
        reference = http_infer(http, "plain", x)
        before = cache_stats(http, "cached")
        answers = [http_infer(http, "cached", x), http_infer(http, "cached", x, binary=False),
                   grpc_infer(grpc, "cached", x), grpc_infer(grpc, "cached", x)]
        after = cache_stats(http, "cached")
        grpc_stats = grpc.get_inference_statistics("cached", as_json=True)["model_stats"][0]["inference_stats"]
    for out, summed, _ in answers:
        assert out.tobytes() == reference[0].tobytes() and summed.tobytes() == reference[1].tobytes()
    assert after["miss"] - before["miss"] == 1 and after["hit"] - before["hit"] == 3
    assert after["success"] - before["success"] == 4
    assert after["inference_count"] - before["inference_count"] == 1  # Triton leaves cached requests out
    assert int(grpc_stats["cache_hit"]["count"]) == after["hit"]
    _, _, text = both.request("GET", "/metrics")
    metrics = text.decode()
    assert f'nv_cache_num_hits_per_model{{model="cached",version="1"}} {float(after["hit"])}' in metrics
    assert f'nv_cache_num_misses_per_model{{model="cached",version="1"}} {float(after["miss"])}' in metrics
    assert "nv_cache_hit_duration_per_model" in metrics and "nv_cache_miss_duration_per_model" in metrics


def test_a_model_without_the_cache_option_is_never_cached(both):
    with contextlib.closing(both.http()) as http:
        for _ in range(3):
            http_infer(http, "plain", X)
        stats = cache_stats(http, "plain")
    assert stats["hit"] == 0 and stats["miss"] == 0


def test_the_byte_bound_evicts_the_least_recently_used(both):
    cache = both.gateway.dataplane.cache
    with contextlib.closing(both.http()) as http:
        first = X + 100
        http_infer(http, "cached", first)
        for i in range(6):  # more distinct answers than the cache holds
            http_infer(http, "cached", X + 200 + i)
        assert cache.bytes <= cache.capacity_bytes
        before = cache_stats(http, "cached")
        http_infer(http, "cached", first)  # evicted: computed again
        after = cache_stats(http, "cached")
    assert after["miss"] - before["miss"] == 1 and after["hit"] == before["hit"]


def test_a_new_version_is_never_answered_from_the_old_ones_entries(both):
    x = X + 1000
    with contextlib.closing(both.http()) as http:
        old_out, _, version = http_infer(http, "cached", x)
        assert http_infer(http, "cached", x)[0].tobytes() == old_out.tobytes()  # cached now
        models.publish(Repository(both.gateway.settings.repo), "cached", models.mlp_fp32(seed=7))
        wait_for(lambda: http_infer(http, "cached", X)[2] == "2", what="version 2 serving")
        new_out, _, new_version = http_infer(http, "cached", x)
        stats = http.get_inference_statistics("cached", "2")["model_stats"][0]["inference_stats"]
    assert new_version == "2" and new_out.tobytes() != old_out.tobytes()
    assert int(stats["cache_miss"]["count"]) >= 2  # version 2 computed x itself
    cache = both.gateway.dataplane.cache
    # Version 1's entries die with it: swept at an insert once it is unloaded.
    fresh = iter(range(10_000))

    def dropped() -> bool:
        with contextlib.closing(both.http()) as client:
            http_infer(client, "cached", X + 5000 + next(fresh))  # a miss: an insert, a sweep
        return both.call(cache.owners) == 1

    wait_for(dropped, what="version 1's entries dropped")


def test_the_key_is_the_exact_bytes_names_datatypes_and_shapes():
    a = InputTensor("X", "FP32", (1, 2), np.array([[1.0, 2.0]], np.float32))
    same = InputTensor("X", "FP32", (1, 2), np.array([[1.0, 2.0]], np.float32))
    assert request_key([a]) == request_key([same])
    other_shape = InputTensor("X", "FP32", (2, 1), np.array([[1.0], [2.0]], np.float32))
    other_type = InputTensor("X", "INT32", (1, 2), np.array([[1.0, 2.0]], np.float32).view(np.int32))
    other_name = InputTensor("Y", "FP32", (1, 2), np.array([[1.0, 2.0]], np.float32))
    keys = {request_key([t]) for t in (a, other_shape, other_type, other_name)}
    assert len(keys) == 4
    zero = InputTensor("X", "FP32", (1, 1), np.array([[0.0]], np.float32))
    minus_zero = InputTensor("X", "FP32", (1, 1), np.array([[-0.0]], np.float32))
    assert request_key([zero]) != request_key([minus_zero])  # bytes, not values
    words = InputTensor("S", "BYTES", (2,), np.array([b"ab", b"c"], dtype=object))
    split = InputTensor("S", "BYTES", (2,), np.array([b"a", b"bc"], dtype=object))
    assert request_key([words]) != request_key([split])


def test_cache_unit_lru_and_owner_drop():
    class Owner:
        ready = True

    one, two = Owner(), Owner()
    answer = {"Y": np.arange(4, dtype=np.float32)}
    size = answer_bytes(answer)
    cache = ResponseCache(2 * size, live=lambda owner: owner.ready)
    cache.put(one, b"a", answer)
    cache.put(one, b"b", answer)
    assert cache.get(one, b"a") is not None  # a is now the most recent
    assert cache.get(two, b"a") is None  # another owner never sees one's entries
    cache.put(two, b"c", answer)  # evicts b, the least recently used
    assert cache.get(one, b"b") is None and cache.get(one, b"a") is not None
    hit = cache.get(one, b"a")
    assert not hit["Y"].flags.writeable
    one.ready = False
    cache.put(two, b"d", answer)  # the sweep drops the unloaded owner's entries
    assert cache.get(one, b"a") is None and cache.owners() == 1 and cache.bytes == 2 * size
    del two
    assert cache.owners() == 0 and cache.bytes == 0 and len(cache) == 0
