"""Hot reload: a new version takes over with no failed request; a corrupt one changes nothing."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from . import models
from .conftest import make_settings, serve, wait_for


@pytest.fixture()
def reload_server(tmp_path):
    repo_root = tmp_path / "repo"
    repo_root.mkdir()
    with serve(make_settings(repo_root)) as server:
        yield server


def _ask(client, x, version=""):
    tensor = triton.InferInput("X", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("addc", [tensor], model_version=version)
    return result.get_response()["model_version"], result.as_numpy("Y")


def test_new_version_switches_without_failures_and_corrupt_version_is_isolated(reload_server):
    server = reload_server
    models.publish(server.repo, "addc", models.add_const_fp32(1.0), models.add_const_config("addc"))
    wait_for(lambda: server.request("GET", "/v2/models/addc/ready")[0] == 200, what="addc v1 loaded")

    x = np.array([[0.5, -2.0]], dtype=np.float32)
    answers: list[tuple[str, np.ndarray]] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def client_loop():
        client = server.client()
        while not stop.is_set():
            try:
                answers.append(_ask(client, x))
            except Exception as exc:  # every failure is a test failure, counted below
                errors.append(exc)

    thread = threading.Thread(target=client_loop)
    thread.start()
    try:
        wait_for(lambda: len(answers) >= 5, what="answers from version 1")
        models.publish(server.repo, "addc", models.add_const_fp32(2.0))  # version 2, same config
        wait_for(lambda: answers and answers[-1][0] == "2", what="answers from version 2")
        seen = len(answers)
        wait_for(lambda: len(answers) >= seen + 5, what="more answers from version 2")
    finally:
        stop.set()
        thread.join(30)
    assert errors == []
    versions = [v for v, _ in answers]
    first_v2 = versions.index("2")
    assert set(versions[:first_v2]) == {"1"} and set(versions[first_v2:]) == {"2"}  # one switch, no flapping
    for version, y in answers:
        np.testing.assert_array_equal(y, x + float(version))
    # The old session is closed once drained (latest-1 policy).
    wait_for(lambda: [e for e in server.client().get_model_repository_index() if e.get("version") == "1"] == [],
             what="version 1 retired")

    # A corrupt version 3: version 2 keeps serving, the index says why 3 is not.
    with server.repo.staging("addc") as staged:
        (staged / "model.onnx").write_bytes(b"this is not an ONNX model")
        server.repo.publish("addc", staged)

    def failed_entry():
        return next((e for e in server.client().get_model_repository_index()
                     if e["name"] == "addc" and e.get("version") == "3" and e["state"] == "UNAVAILABLE"), None)

    entry = wait_for(failed_entry, what="version 3 reported as failed")
    assert "onnxruntime cannot load" in entry["reason"]
    version, y = _ask(server.client(), x)
    assert version == "2"
    np.testing.assert_array_equal(y, x + 2)
    with pytest.raises(InferenceServerException) as info:
        _ask(server.client(), x, version="3")
    assert info.value.status() == "503" and "UNAVAILABLE" in info.value.message()
