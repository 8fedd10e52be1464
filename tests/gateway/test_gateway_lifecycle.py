"""Shutdown drains in-flight requests; the API key guards control routes; providers."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tritonclient.http as triton

from gateway.core.errors import LoadError
from gateway.runtime.onnx import OnnxRuntime
from gateway.settings import RuntimeSettings, load_settings

from . import models
from .conftest import API_KEY, make_settings, serve, wait_for


def test_shutdown_drains_in_flight_requests(tmp_path):
    repo_root = tmp_path / "repo"
    repo_root.mkdir()
    from model_repo import Repository

    # Requests wait up to 10 s for a batch of 8 to fill: three of them are still queued
    # when shutdown starts, and must all be answered.
    models.publish(Repository(repo_root), "slow", models.mlp_fp32(),
                   models.mlp_config("slow", delay_us=10_000_000, preferred=(8,)))
    with serve(make_settings(repo_root)) as server:
        served = server.registry.route("slow")
        x = [np.full((1, 4), i, np.float32) for i in range(3)]
        results: dict[int, np.ndarray] = {}
        errors: list[Exception] = []

        def ask(i):
            try:
                tensor = triton.InferInput("X", [1, 4], "FP32")
                tensor.set_data_from_numpy(x[i])
                results[i] = server.client().infer("slow", [tensor]).as_numpy("SUM")
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        wait_for(lambda: server.call(lambda: served.batcher.pending) == 3, what="three queued requests")
        server.call(server.runner.cleanup())
        for t in threads:
            t.join(30)
        assert errors == []
        for i in range(3):
            np.testing.assert_array_equal(results[i], x[i] + 1)
        assert not served.runtime.ready  # session closed after the drain
        with pytest.raises(ConnectionRefusedError):
            server.request("GET", "/v2/health/live")


def test_api_key_guards_unload_and_load(gateway):
    status, body = gateway.json("POST", "/v2/repository/models/bools/unload")
    assert status == 401 and "API key" in body["error"]
    status, _ = gateway.json("POST", "/v2/repository/models/bools/unload", headers={"X-API-Key": "wrong"})
    assert status == 401
    assert gateway.client().is_model_ready("bools")  # refused means nothing happened

    client = gateway.client(verbose=False)
    client.unload_model("bools", headers={"X-API-Key": API_KEY})
    assert not client.is_model_ready("bools")
    entry = next(e for e in client.get_model_repository_index() if e["name"] == "bools")
    assert entry["state"] == "UNAVAILABLE" and entry["reason"] == "unloaded"
    status, body = gateway.json("POST", "/v2/models/bools/infer", {"inputs": []})
    assert status == 503
    client.load_model("bools", headers={"Authorization": f"Bearer {API_KEY}"})
    assert client.is_model_ready("bools")


async def test_provider_auto_falls_back_to_cpu_and_cuda_fails_clearly(tmp_path, caplog):
    path = tmp_path / "model.onnx"
    path.write_bytes(models.int64_model())
    config = models.int64_config("int64")
    caplog.set_level("INFO", logger="tunegate.runtime")
    auto = OnnxRuntime("int64", 1, config, RuntimeSettings(provider="auto"), path)
    await auto.load()
    try:
        assert auto.provider == "CPUExecutionProvider"
        assert auto.parameters()["provider_reason"].startswith("provider=auto fell back to CPU: ")
        assert "fell back to CPU" in caplog.text
        out = await auto.predict({"X": np.ones((1, 3), np.int64)}, ["Y"])
        np.testing.assert_array_equal(out["Y"], [[4, 4, 4]])
    finally:
        await auto.unload()
    cuda = OnnxRuntime("int64", 1, config, RuntimeSettings(provider="cuda"), path)
    with pytest.raises(LoadError, match="provider=cuda requested but CUDA cannot serve"):
        await cuda.load()


def test_settings_precedence(tmp_path, monkeypatch):
    config = tmp_path / "gateway.toml"
    config.write_text('port = 9001\nhost = "0.0.0.0"\n[runtime]\ninstance_count = 3\nprovider = "cuda"\n'
                      '[models.big]\nintra_op_threads = 2\n')
    monkeypatch.setenv("TUNEGATE_RUNTIME__PROVIDER", "cpu")
    monkeypatch.setenv("TUNEGATE_HOST", "10.0.0.1")
    settings = load_settings(config, host="127.0.0.2", repo=tmp_path)
    assert (settings.port, settings.host) == (9001, "127.0.0.2")  # file < env < flags
    assert settings.runtime.provider == "cpu" and settings.runtime.instance_count == 3
    big = settings.runtime_for("big")
    assert big.intra_op_threads == 2 and big.provider == "cpu" and big.instance_count == 3
