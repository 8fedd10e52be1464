"""The Triton runtime against real tritonservers (Python backend running the repository's
model.onnx on onnxruntime), with the official tritonclient through the gateway. The gateway
forwards over Triton's HTTP and gRPC services, each endpoint its own."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from model_repo import Repository
from model_repo.triton import write_python_view
from tests.triton_server import grpc_url, tritonserver

from . import models
from .conftest import make_settings, serve, wait_for

TRITON_MODELS = ["mlp", "int64", "upper"]
# Gateway models forwarded over gRPC to Triton's model of the same name without the suffix.
GRPC_MODELS = {f"{m}_grpc": m for m in TRITON_MODELS}


def _input(name, array, datatype, binary=True):
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def _triton_settings(endpoints, **triton_overrides):
    return {"kind": "triton", "triton": {"endpoints": endpoints, "health_interval_seconds": 0.2,
                                         "failure_threshold": 2, "ready_timeout_seconds": 60,
                                         **triton_overrides}}


def _build(root):
    repo = Repository(root / "repo")
    models.publish(repo, "mlp", models.mlp_fp32(), models.mlp_config("mlp"))
    models.publish(repo, "int64", models.int64_model(), models.int64_config("int64"))
    models.publish(repo, "upper", models.bytes_model(), models.bytes_config("upper"))
    models.publish(repo, "addc", models.add_const_fp32(1.0), models.add_const_config("addc"))
    # In the gateway's repository only: forwarded to Triton's "mlp", whose tensors differ.
    models.publish(repo, "mismatch", models.int64_model(), models.int64_config("mismatch"))
    # In the gateway's repository only: the same models, forwarded over gRPC (or a mixed fleet).
    models.publish(repo, "mlp_grpc", models.mlp_fp32(), models.mlp_config("mlp_grpc"))
    models.publish(repo, "int64_grpc", models.int64_model(), models.int64_config("int64_grpc"))
    models.publish(repo, "upper_grpc", models.bytes_model(), models.bytes_config("upper_grpc"))
    models.publish(repo, "int64_mixed", models.int64_model(), models.int64_config("int64_mixed"))
    models.publish(repo, "bad_endpoint", models.int64_model(), models.int64_config("bad_endpoint"))
    write_python_view(repo, root / "view", TRITON_MODELS + ["addc"])
    return repo


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Two tritonservers in POLL mode over one view, and a gateway forwarding to both: over
    HTTP, over gRPC (``*_grpc``), and to A over HTTP and B over gRPC (``int64_mixed``)."""
    root = tmp_path_factory.mktemp("triton")
    repo = _build(root)
    with tritonserver(root / "view") as a, tritonserver(root / "view") as b:
        endpoints = [a.url, b.url]
        per_model = {m: _triton_settings(endpoints) for m in TRITON_MODELS + ["addc"]}
        per_model["mismatch"] = _triton_settings(endpoints, model_name="mlp", ready_timeout_seconds=0)
        per_model |= {m: _triton_settings([grpc_url(a), grpc_url(b)], model_name=remote)
                      for m, remote in GRPC_MODELS.items()}
        per_model["int64_mixed"] = _triton_settings([a.url, grpc_url(b)], model_name="int64")
        per_model["bad_endpoint"] = _triton_settings([grpc_url(a), f"https://{b.url}"], model_name="int64",
                                                     ready_timeout_seconds=0)
        # "mismatch" and "bad_endpoint" never load: strict readiness would keep the server unready.
        with serve(make_settings(repo.root, models=per_model, strict_readiness=False)) as gateway:
            yield gateway, a, b, root


def _triton_count(server, model, outcome="success"):
    stats = triton.InferenceServerClient(server.url).get_inference_statistics(model)["model_stats"]
    return sum(s["inference_stats"][outcome]["count"] for s in stats)


def test_metadata_and_config_come_from_triton(fleet):
    gateway, a, _, _ = fleet
    client = gateway.client()
    meta = client.get_model_metadata("mlp")
    assert meta["platform"] == "triton" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    params = meta["parameters"]
    assert params["triton_platform"] == "python" and params["triton_model"] == "mlp"
    assert {e["url"] for e in params["triton_endpoints"]} == {a.url, fleet[2].url}
    config = client.get_model_config("mlp")
    # Triton's config, not the repository's: the Python backend and Triton's auto-completion.
    assert config["backend"] == "python" and config["max_batch_size"] == 16
    assert config["input"][0]["dims"] == [4]
    assert config["instance_group"][0]["kind"] == "KIND_CPU"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_through_triton(fleet, binary):
    client = fleet[0].client()
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    result = client.infer("mlp", [_input("X", x, "FP32", binary)],
                          outputs=[triton.InferRequestedOutput("SUM", binary_data=binary)])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["SUM"]
    np.testing.assert_array_equal(result.as_numpy("SUM"), x + 1)

    big = np.array([[1, -2, 3], [2**40, 0, -7]], dtype=np.int64)
    out = client.infer("int64", [_input("X", big, "INT64", binary)],
                       outputs=[triton.InferRequestedOutput("Y", binary_data=binary)])
    np.testing.assert_array_equal(out.as_numpy("Y"), big * 3 + 1)

    text = np.array([b"abc", b"Hello world", b""], dtype=object)
    out = client.infer("upper", [_input("TEXT", text, "BYTES", binary)],
                       outputs=[triton.InferRequestedOutput("UPPER", binary_data=binary)])
    assert [v if isinstance(v, bytes) else v.encode() for v in out.as_numpy("UPPER")] == [b"ABC", b"HELLO WORLD", b""]


SAME_ANSWER_CASES = [  # model, input name, array, datatype, output
    ("mlp", "X", np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32), "FP32", "OUT"),
    ("int64", "X", np.array([[1, -2, 3], [2**40, 0, -7]], dtype=np.int64), "INT64", "Y"),
    ("upper", "TEXT", np.array([b"abc", b"Hello world", b"", "\u00e9t\u00e9".encode()], dtype=object),
     "BYTES", "UPPER"),
]


def test_same_answers_over_http_grpc_and_onnxruntime_in_process(fleet):
    """The wrapper serves the very model.onnx: forwarded over HTTP, over gRPC, and the
    gateway's own onnxruntime answer bit for bit alike."""
    client = fleet[0].client()
    local_models = [model for model, *_ in SAME_ANSWER_CASES]
    with serve(make_settings(fleet[0].repo.root, model_control="explicit", load_models=local_models)) as local:
        for model, name, x, datatype, output in SAME_ANSWER_CASES:
            def ask(c, served_as):
                result = c.infer(served_as, [_input(name, x, datatype)],
                                 outputs=[triton.InferRequestedOutput(output)])
                return result.as_numpy(output)
            via_http, via_grpc = ask(client, model), ask(client, f"{model}_grpc")
            in_process = ask(local.client(), model)
            assert via_http.dtype == via_grpc.dtype == in_process.dtype, model
            np.testing.assert_array_equal(via_grpc, via_http, err_msg=model)
            np.testing.assert_array_equal(via_grpc, in_process, err_msg=model)


def test_metadata_and_config_over_grpc_are_those_over_http(fleet):
    """gRPC's protobuf answers reach the gateway in the shape HTTP's JSON does."""
    gateway, a, b, _ = fleet
    client = gateway.client()
    for grpc_model, model in GRPC_MODELS.items():
        assert client.get_model_config(grpc_model) == client.get_model_config(model)
        over_grpc, over_http = client.get_model_metadata(grpc_model), client.get_model_metadata(model)
        for key in ("platform", "versions", "inputs", "outputs"):
            assert over_grpc[key] == over_http[key], (grpc_model, key)
        endpoints = over_grpc["parameters"]["triton_endpoints"]
        assert [(e["url"], e["protocol"], e["state"]) for e in endpoints] == [
            (grpc_url(a), "grpc", "closed"), (grpc_url(b), "grpc", "closed")]
        assert over_grpc["parameters"]["triton_platform"] == "python"


def test_triton_errors_over_grpc_answer_as_over_http(fleet):
    """Triton's gRPC error answers map as its HTTP ones do, and are never retried."""
    gateway, a, b, _ = fleet
    client = gateway.client()
    bad = np.array([b"\xff\xfe not UTF-8"], dtype=object)  # the gateway passes bytes; the model cannot
    answers = {}
    for model in ("upper", "upper_grpc"):
        before = _triton_count(a, "upper", "fail") + _triton_count(b, "upper", "fail")
        with pytest.raises(InferenceServerException) as info:
            client.infer(model, [_input("TEXT", bad, "BYTES")])
        # Triton counts a failure once its request is released, which may follow the answer.
        failures = lambda: _triton_count(a, "upper", "fail") + _triton_count(b, "upper", "fail")  # noqa: E731
        wait_for(lambda: failures() > before, what="Triton counting the failed request")
        assert failures() == before + 1
        answers[model] = (info.value.status(), info.value.message().split(": ", 2)[-1])
    assert answers["upper_grpc"] == answers["upper"]
    assert answers["upper"][0] == "500" and "UnicodeDecodeError" in answers["upper"][1]


def test_bad_input_is_400_before_triton(fleet):
    gateway, a, b, _ = fleet
    before = _triton_count(a, "mlp") + _triton_count(b, "mlp")
    status, body = gateway.json("POST", "/v2/models/mlp/infer", {"inputs": [
        {"name": "X", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]})
    assert status == 400 and "shape [1, 5]" in body["error"]
    assert _triton_count(a, "mlp") + _triton_count(b, "mlp") == before


def test_least_outstanding_spreads_over_both_endpoints(fleet):
    gateway, a, b, _ = fleet
    before = (_triton_count(a, "int64"), _triton_count(b, "int64"))
    client = gateway.client()
    for i in range(10):  # one at a time: both idle each time, so the tie rotates
        client.infer("int64", [_input("X", np.full((1, 3), i, np.int64), "INT64")])
    after = (_triton_count(a, "int64"), _triton_count(b, "int64"))
    assert (after[0] - before[0], after[1] - before[1]) == (5, 5)


def test_mixed_fleet_spreads_over_http_and_grpc(fleet):
    """One endpoint over HTTP (A), one over gRPC (B): one pool balances both."""
    gateway, a, b, _ = fleet
    client = gateway.client()
    endpoints = client.get_model_metadata("int64_mixed")["parameters"]["triton_endpoints"]
    assert [(e["url"], e["protocol"]) for e in endpoints] == [(a.url, "http"), (grpc_url(b), "grpc")]
    before = (_triton_count(a, "int64"), _triton_count(b, "int64"))
    for i in range(10):  # one at a time: both idle each time, so the tie rotates
        x = np.full((1, 3), i, np.int64)
        out = client.infer("int64_mixed", [_input("X", x, "INT64")]).as_numpy("Y")
        np.testing.assert_array_equal(out, x * 3 + 1)
    after = (_triton_count(a, "int64"), _triton_count(b, "int64"))
    assert (after[0] - before[0], after[1] - before[1]) == (5, 5)


def test_stats_and_metrics_for_a_triton_model(fleet):
    gateway = fleet[0]
    client = gateway.client()
    before = client.get_inference_statistics("int64")["model_stats"][0]["inference_count"]
    client.infer("int64", [_input("X", np.ones((2, 3), np.int64), "INT64")])
    stats = client.get_inference_statistics("int64")["model_stats"][0]
    assert stats["inference_count"] == before + 2 and stats["inference_stats"]["success"]["count"] >= 1
    status, _, text = gateway.request("GET", "/metrics")
    assert status == 200
    text = text.decode()
    assert 'nv_inference_count{model="int64",version="1"}' in text
    assert 'platform="triton"' in text and 'execution_provider="triton"' in text


def test_a_triton_model_that_differs_from_config_pbtxt_is_refused(fleet):
    gateway = fleet[0]
    status, body = gateway.json("POST", "/v2/repository/index", {})
    row = next(r for r in body if r["name"] == "mismatch")
    assert row["state"] == "UNAVAILABLE"
    assert "Triton serves 'mlp' as" in row["reason"] and "config.pbtxt says" in row["reason"]


def test_an_endpoint_of_neither_protocol_is_refused(fleet):
    gateway, _, b, _ = fleet
    status, body = gateway.json("POST", "/v2/repository/index", {})
    row = next(r for r in body if r["name"] == "bad_endpoint")
    assert row["state"] == "UNAVAILABLE"
    assert f"'https://{b.url}'" in row["reason"] and "grpc://host:port" in row["reason"]


def test_new_version_follows_triton_poll(fleet):
    """Publish v2, refresh the view; Triton (POLL) loads it, then the gateway forwards to it."""
    gateway, a, b, root = fleet
    repo = gateway.repo
    models.publish(repo, "addc", models.add_const_fp32(2.0), models.add_const_config("addc"))
    write_python_view(repo, root / "view", ["addc"])
    client = gateway.client()
    wait_for(lambda: client.get_model_metadata("addc")["versions"] == ["2"], what="gateway serving addc v2",
             timeout=120, interval=0.2)
    x = np.ones((1, 2), np.float32)
    result = client.infer("addc", [_input("X", x, "FP32")])
    assert result.get_response()["model_version"] == "2"
    np.testing.assert_array_equal(result.as_numpy("Y"), x + 2)


# ------------------------------------------------------------- failures
@pytest.fixture
def pair(tmp_path):
    """Two tritonservers and a gateway that the test may break."""
    _build(tmp_path)
    a = tritonserver(tmp_path / "view", poll_seconds=None)
    b = tritonserver(tmp_path / "view", poll_seconds=None)
    with a as server_a, b as server_b:
        grpc_a, grpc_b = grpc_url(server_a), grpc_url(server_b)
        per_model = {
            "mlp": _triton_settings([server_a.url, server_b.url]),
            # Probed once at load only: a dead endpoint is found by connecting to it.
            "int64_grpc": _triton_settings([grpc_a, grpc_b], model_name="int64", health_interval_seconds=3600),
            "mlp_grpc": _triton_settings([grpc_a], model_name="mlp"),
        }
        settings = make_settings(tmp_path / "repo", models=per_model, model_control="explicit",
                                 load_models=list(per_model))
        with serve(settings) as gateway:
            yield gateway, server_a, server_b, tmp_path


def _endpoints(gateway, model="mlp"):
    return {e["url"]: e for e in gateway.client().get_model_metadata(model)["parameters"]["triton_endpoints"]}


def _endpoint_states(gateway, model="mlp"):
    return {url: e["state"] for url, e in _endpoints(gateway, model).items()}


def _dead_grpc_endpoint_is_skipped(gateway, dead, alive):
    """The dead server's gRPC service, unprobed since it died: connecting fails, so each
    request goes on to the other endpoint and succeeds, and the dead one's circuit opens
    after failure_threshold refusals."""
    client = gateway.client()
    assert _endpoint_states(gateway, "int64_grpc")[grpc_url(dead)] == "closed"
    before, sent = _triton_count(alive, "int64"), 0
    while _endpoint_states(gateway, "int64_grpc")[grpc_url(dead)] != "open":
        assert sent < 10, _endpoints(gateway, "int64_grpc")
        x = np.full((1, 3), sent, np.int64)
        np.testing.assert_array_equal(client.infer("int64_grpc", [_input("X", x, "INT64")]).as_numpy("Y"), x * 3 + 1)
        sent += 1
    assert sent >= 2 and _triton_count(alive, "int64") - before == sent
    assert _endpoints(gateway, "int64_grpc")[grpc_url(dead)]["last_error"].startswith("cannot connect")
    assert _endpoint_states(gateway, "int64_grpc")[grpc_url(alive)] == "closed"


def test_killed_endpoint_moves_traffic_then_503_when_none_then_recovers(pair):
    gateway, a, b, root = pair
    x = np.ones((1, 4), np.float32)
    statuses: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def load():
        client = gateway.client()
        for _ in range(400):  # bounded; stops early once the kill has been seen through
            if stop.is_set():
                break
            try:
                client.infer("mlp", [_input("X", x, "FP32")])
                statuses.append("200")
            except InferenceServerException as exc:
                statuses.append(exc.status())
                errors.append(exc.message())
        client.close()

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    wait_for(lambda: len(statuses) >= 20, what="traffic before the kill")
    a.kill()  # mid-run, no graceful drain
    wait_for(lambda: _endpoint_states(gateway)[a.url] == "open", what="A's circuit open")
    served_after_open = len(statuses)
    wait_for(lambda: len(statuses) >= served_after_open + 20, what="traffic after the kill")
    stop.set()
    for w in workers:
        w.join(60)
    # Only requests in flight on A when it died may fail, and only as 502 (never retried).
    assert set(statuses) <= {"200", "502"}, errors
    assert all("failed mid-request" in e or "unreachable" in e for e in errors), errors
    assert statuses[served_after_open:].count("200") >= 20
    assert _triton_count(b, "mlp") > 0

    # Every later request goes to B, one after another, without a failure.
    client = gateway.client()
    for _ in range(5):
        np.testing.assert_array_equal(client.infer("mlp", [_input("X", x, "FP32")]).as_numpy("SUM"), x + 1)

    _dead_grpc_endpoint_is_skipped(gateway, dead=a, alive=b)

    b.kill()
    with pytest.raises(InferenceServerException) as info:
        client.infer("mlp", [_input("X", x, "FP32")])
    assert info.value.status() == "503" and "no healthy Triton endpoint" in info.value.message()
    wait_for(lambda: set(_endpoint_states(gateway).values()) == {"open"}, what="both circuits open")
    with pytest.raises(InferenceServerException) as info:
        client.infer("mlp", [_input("X", x, "FP32")])
    assert info.value.status() == "503"
    assert "circuit open" in info.value.message() and a.url in info.value.message()

    # A comes back on its addresses: the probes close its circuits (HTTP and gRPC) and traffic resumes.
    assert _endpoint_states(gateway, "mlp_grpc") == {grpc_url(a): "open"}
    with tritonserver(root / "view", poll_seconds=None, port=a.http_port, grpc_port=a.grpc_port):
        wait_for(lambda: _endpoint_states(gateway)[a.url] == "closed", what="A's circuit closed again")
        np.testing.assert_array_equal(client.infer("mlp", [_input("X", x, "FP32")]).as_numpy("SUM"), x + 1)
        wait_for(lambda: _endpoint_states(gateway, "mlp_grpc")[grpc_url(a)] == "closed",
                 what="A's gRPC circuit closed again")
        np.testing.assert_array_equal(client.infer("mlp_grpc", [_input("X", x, "FP32")]).as_numpy("SUM"), x + 1)
