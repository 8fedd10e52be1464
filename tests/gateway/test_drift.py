"""Input drift on a real gateway: shifted inputs raise the score in metadata and metrics,
and the ``drift`` trigger starts exactly one fine-tune job (one that fails fast: its data
fine-tunes a version with no Keras source; that it started is what is tested)."""

from __future__ import annotations

import numpy as np
import tritonclient.http as triton

from model_repo import Repository
from model_repo.drift import summarise

from . import loop_models
from .conftest import API_KEY, make_settings, serve, wait_for

KEY = {"X-API-Key": API_KEY}


def _publish_with_summary(repo: Repository, reference: np.ndarray) -> int:
    with repo.staging("clf") as staged:
        (staged / "model.onnx").write_bytes(loop_models.classifier())
        return repo.publish("clf", staged, config=loop_models.classifier_config("clf"),
                            input_summary=summarise(reference).to_dict()).version


def _send(client, rng, requests: int, shift: float) -> None:
    for _ in range(requests):
        x = (rng.normal(size=(8, 4)) + shift).astype(np.float32)
        inp = triton.InferInput("X", [8, 4], "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        client.infer("clf", [inp])


def _drift(server) -> dict:
    return server.client().get_model_metadata("clf")["parameters"].get("drift") or {}


def test_shifted_inputs_raise_drift_and_the_drift_trigger_starts_one_job(tmp_path):
    rng = np.random.default_rng(0)
    repo = Repository(tmp_path / "repo")
    version = _publish_with_summary(repo, rng.normal(size=(2000, 4)))
    jobs = tmp_path / "jobs"
    settings = make_settings(repo.root, api_key=API_KEY, loop={
        "trigger": "drift", "drift_window_seconds": 600, "drift_sustain_seconds": 0, "drift_min_labelled": 4,
        "np": 1, "jobs_dir": str(jobs), "data": ["feedback:", str(tmp_path / "missing.npz")]})
    with serve(settings) as server:
        client = server.client()
        wait_for(lambda: _drift(server).get("reference_version") == version, what="drift monitoring")
        _send(client, rng, 30, shift=0.0)
        calm = wait_for(lambda: (d := _drift(server)).get("score") is not None and d, what="a score")
        assert calm["score"] < 0.2 and calm["rows"] >= 200 and calm["features"] == 4
        labels = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [4, 4], "data": [0.0] * 16},
                             {"name": "label", "datatype": "INT64", "shape": [4], "data": [0, 1, 2, 0]}]}
        assert server.json("POST", "/v2/models/clf/feedback", labels, KEY)[0] == 200
        assert "finetune_job" not in client.get_model_metadata("clf")["parameters"]  # enough labels, no drift

        _send(client, rng, 60, shift=3.0)
        drifted = wait_for(lambda: (d := _drift(server)).get("score", 0) > 1.0 and d, what="drift")
        assert drifted["top"][0]["psi"] > 1.0 and drifted["processes"] == 1
        metrics = server.request("GET", "/metrics")[2].decode()
        assert 'tunegate_drift_score{model="clf"}' in metrics
        assert 'tunegate_drift_psi{feature="' in metrics
        job = wait_for(lambda: client.get_model_metadata("clf")["parameters"].get("last_finetune_job"),
                       what="the drift-triggered job to end")
        assert job["state"] == "failed" and "exit status 2" in job["message"]  # started, then refused: no source
        # Drift stays high, but no new feedback came: the trigger does not fire again.
        _send(client, rng, 5, shift=3.0)
        wait_for(lambda: _drift(server)["rows"] > drifted["rows"], what="another poll")
        assert len([p for p in jobs.iterdir() if p.is_dir()]) == 1
        assert (repo.root / "clf" / ".loop" / "drift").is_dir()
