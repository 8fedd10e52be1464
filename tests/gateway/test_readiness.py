"""Strict readiness (Triton's rule): ready only when every model that should be loaded is."""

from __future__ import annotations

import json

from gateway.http.app import create_app
from gateway.core.errors import StartupError

from . import models
from .conftest import API_KEY, make_settings, serve, wait_for


def _ready(server) -> tuple[int, dict]:
    status, _, raw = server.request("GET", "/v2/health/ready")
    return status, json.loads(raw)


def _repo(tmp_path):
    from model_repo import Repository

    repo = Repository(tmp_path / "repo")
    models.publish(repo, "mlp", models.mlp_fp32(), models.mlp_config("mlp"))
    models.publish(repo, "addc", models.add_const_fp32(1.0), models.add_const_config("addc"))
    return repo


def test_not_ready_when_every_model_failed_to_load(tmp_path):
    # CUDA is asked for on a machine without it: every model is UNAVAILABLE.
    repo = _repo(tmp_path)
    with serve(make_settings(repo.root, runtime={"provider": "cuda"}), wait_ready=False) as server:
        status, body = _ready(server)
        assert status == 503 and "error" in body
        assert server.request("GET", "/v2/health/live")[0] == 200
    with serve(make_settings(repo.root, runtime={"provider": "cuda"}, strict_readiness=False),
               wait_ready=False) as server:
        assert _ready(server)[0] == 200


def test_not_ready_while_one_model_is_missing(tmp_path):
    repo = _repo(tmp_path)
    (repo.root / "broken").mkdir()
    (repo.root / "broken" / "config.pbtxt").write_text("this is not a model config {")
    with serve(make_settings(repo.root), wait_ready=False) as server:
        assert _ready(server)[0] == 503
        (repo.root / "broken" / "config.pbtxt").unlink()
        (repo.root / "broken").rmdir()
        wait_for(lambda: _ready(server)[0] == 200, what="ready once the broken model left the repository")


def test_unloading_a_model_makes_the_server_unready_in_poll_mode(tmp_path):
    repo = _repo(tmp_path)
    with serve(make_settings(repo.root, api_key=API_KEY)) as server:
        assert server.request("POST", "/v2/repository/models/mlp/unload", b"", {"X-API-Key": API_KEY})[0] == 200
        assert _ready(server)[0] == 503
        assert server.request("POST", "/v2/repository/models/mlp/load", b"", {"X-API-Key": API_KEY})[0] == 200
        assert _ready(server)[0] == 200


def test_explicit_mode_counts_only_the_models_asked_for(tmp_path):
    repo = _repo(tmp_path)
    settings = make_settings(repo.root, api_key=API_KEY, model_control="explicit", load_models=["mlp"])
    with serve(settings) as server:
        assert _ready(server)[0] == 200  # addc is in the repository but was never asked for
        assert server.request("POST", "/v2/repository/models/mlp/unload", b"", {"X-API-Key": API_KEY})[0] == 200
        assert _ready(server)[0] == 200  # nothing is expected to be loaded any more


async def test_exit_on_error_fails_start_up_with_the_reason(tmp_path):
    from aiohttp import web

    repo = _repo(tmp_path)
    app = create_app(make_settings(repo.root, runtime={"provider": "cuda"}, exit_on_error=True))
    runner = web.AppRunner(app)
    try:
        await runner.setup()
    except StartupError as exc:
        assert "exit_on_error" in exc.message and "'mlp'" in exc.message and "CUDA" in exc.message
    else:
        raise AssertionError("start-up succeeded although every model failed to load")
    finally:
        await runner.cleanup()
