"""The gRPC front end with the unmodified tritonclient.grpc client against a real gateway that
serves HTTP beside it (one Gateway): every RPC, every datatype, streaming, status codes, the
API key, the same answers as HTTP bit for bit, and feedback across the two protocols."""

from __future__ import annotations

import queue
import threading

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from model_repo import config_to_dict
from model_repo.feedback import feedback_dir, read_feedback

from .conftest import API_KEY, wait_for
from .grpc_fixture import ECHO_CASES, build_both_repository, both_settings, serve_both

KEY = {"x-api-key": API_KEY}  # gRPC metadata keys are lower case (HTTP does not mind)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpc-repo")
    build_both_repository(root)
    settings = both_settings(root, api_key=API_KEY, max_body_bytes=1 << 20, loop={"capture": True})
    with serve_both(settings) as server:
        yield server


@pytest.fixture()
def client(both):
    with both.grpc() as c:
        yield c


def _inputs(module, arrays: dict[str, tuple[np.ndarray, str]]):
    out = []
    for name, (array, datatype) in arrays.items():
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


def _code(call) -> tuple[str, str]:
    """The status (as tritonclient writes it: "StatusCode.NOT_FOUND") and message of an error."""
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value.status(), info.value.message()


def _mlp_x(rows: int = 2) -> dict:
    return {"X": (np.arange(rows * 4, dtype=np.float32).reshape(rows, 4) / 7, "FP32")}


# ------------------------------------------------------------------ health and metadata
def test_health_and_metadata_agree_with_http(both, client):
    http = both.http()
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp") and client.is_model_ready("mlp", "1")
    assert not client.is_model_ready("no_such_model") and not client.is_model_ready("mlp", "9")
    assert json_format.MessageToDict(client.get_server_metadata()) == both.json("GET", "/v2")[1]
    for model in ("mlp", "echo", "upper"):
        over_grpc = client.get_model_metadata(model, as_json=True)
        over_http = http.get_model_metadata(model)
        over_http.pop("parameters", None)  # the gRPC message has no metadata parameters
        for tensor in over_http["inputs"] + over_http["outputs"]:
            tensor["shape"] = [str(d) for d in tensor["shape"]]  # protobuf's JSON writes int64 as text
        assert over_grpc == over_http


def test_model_config_is_the_repository_config(both, client):
    config = client.get_model_config("mlp").config
    assert config_to_dict(config) == both.json("GET", "/v2/models/mlp/config")[1]
    assert config.name == "mlp" and config.max_batch_size == 16 and [t.name for t in config.input] == ["X"]
    assert _code(lambda: client.get_model_config("no_such_model"))[0] == str(grpc.StatusCode.NOT_FOUND)


def test_statistics_count_grpc_traffic_and_agree_with_http(both, client):
    def count() -> int:
        stats = client.get_inference_statistics("int64", as_json=True)["model_stats"][0]
        return int(stats["inference_stats"]["success"].get("count", 0))

    before = count()
    x = {"X": (np.array([[1, 2, 3]], np.int64), "INT64")}
    for _ in range(3):
        client.infer("int64", _inputs(grpcclient, x))
    assert count() == before + 3
    over_http = both.json("GET", "/v2/models/int64/stats")[1]["model_stats"][0]["inference_stats"]["success"]
    assert over_http["count"] == before + 3
    everything = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {"mlp", "int64", "upper", "echo"} <= {s["name"] for s in everything}


# ------------------------------------------------------------------ inference
def test_every_datatype_round_trips_bit_exactly(client):
    arrays = {f"IN_{t}": (a, t) for t, a in ECHO_CASES.items()}
    result = client.infer("echo", _inputs(grpcclient, arrays), request_id="all-types")
    assert result.get_response().id == "all-types" and result.get_response().model_version == "1"
    for datatype, array in ECHO_CASES.items():
        answer = result.as_numpy(f"OUT_{datatype}")
        assert answer.dtype == array.dtype and answer.shape == array.shape, datatype
        if datatype == "BYTES":
            assert answer.tolist() == array.tolist()
        else:
            assert answer.tobytes() == array.tobytes(), datatype


def test_typed_contents_are_accepted(both):
    with grpc.insecure_channel(both.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="int64")
        request.inputs.add(name="X", datatype="INT64", shape=[2, 3]).contents.int64_contents.extend(range(6))
        answer = stub.ModelInfer(request)
        assert np.frombuffer(answer.raw_output_contents[0], "<i8").tolist() == [3 * i + 1 for i in range(6)]
        request = pb.ModelInferRequest(model_name="upper")
        request.inputs.add(name="TEXT", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"ab", b"c"])
        answer = grpcclient.InferResult(stub.ModelInfer(request))
        assert answer.as_numpy("UPPER").tolist() == [b"AB", b"C"]
        request = pb.ModelInferRequest(model_name="bools")
        for name in ("A", "B"):
            request.inputs.add(name=name, datatype="BOOL", shape=[1, 2]).contents.bool_contents.extend([True, False])
        request.outputs.add(name="BOTH")
        answer = grpcclient.InferResult(stub.ModelInfer(request))
        assert [o.name for o in answer.get_response().outputs] == ["BOTH"]
        assert answer.as_numpy("BOTH").tolist() == [[True, False]]


@pytest.mark.parametrize("model, arrays", [
    ("mlp", _mlp_x(3)),
    ("mlp_batched", _mlp_x(1)),
    ("int64", {"X": (np.array([[-(2**40), 0, 7]], np.int64), "INT64")}),
    ("upper", {"TEXT": (np.array([b"abc", "h\xe9llo".encode(), b""], dtype=object), "BYTES")}),
    ("bools", {"A": (np.array([[True, False]]), "BOOL"), "B": (np.array([[True, True]]), "BOOL")}),
    ("echo", {f"IN_{t}": (a, t) for t, a in ECHO_CASES.items()}),
])
def test_the_same_answers_over_grpc_and_http(both, client, model, arrays):
    over_grpc = client.infer(model, _inputs(grpcclient, arrays))
    with both.http() as http:
        outputs = [httpclient.InferRequestedOutput(o["name"], binary_data=True)
                   for o in http.get_model_metadata(model)["outputs"]]
        over_http = http.infer(model, _inputs(httpclient, arrays), outputs=outputs)
    names = [o.name for o in over_grpc.get_response().outputs]
    assert names == [o["name"] for o in over_http.get_response()["outputs"]]
    for name in names:
        a, b = over_grpc.as_numpy(name), over_http.as_numpy(name)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tolist() == b.tolist() if a.dtype == object else a.tobytes() == b.tobytes()


def test_aio_client(both):
    import asyncio

    import tritonclient.grpc.aio as aioclient

    async def main():
        async with aioclient.InferenceServerClient(both.grpc_url) as c:
            assert await c.is_server_ready() and await c.is_model_ready("mlp")
            assert (await c.get_model_metadata("mlp")).name == "mlp"
            result = await c.infer("mlp", _inputs(aioclient, _mlp_x()), request_id="aio-1")
            assert result.as_numpy("SUM").tolist() == (_mlp_x()["X"][0] + 1).tolist()

            async def requests():
                for i, rows in enumerate([1, 0, 2]):  # a batch of 0 rows in the middle
                    x = np.ones((rows, 4), np.float32)
                    yield {"model_name": "mlp", "inputs": _inputs(aioclient, {"X": (x, "FP32")}),
                           "request_id": f"s{i}"}

            answers = [pair async for pair in c.stream_infer(requests())]
            ok = sorted(r.get_response().id for r, e in answers if e is None)
            errors = [e for r, e in answers if e is not None]
            assert ok == ["s0", "s2"] and len(errors) == 1 and "batch size 0" in errors[0].message()
            with pytest.raises(InferenceServerException) as info:
                await c.infer("no_such_model", _inputs(aioclient, _mlp_x()))
            assert info.value.status() == "StatusCode.NOT_FOUND"

    asyncio.run(main())


def test_stream_goes_on_after_a_bad_request(client):
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        good = _inputs(grpcclient, _mlp_x())
        bad = _inputs(grpcclient, {"X": (np.ones((2, 5), np.float32), "FP32")})
        for i, inputs in enumerate([good, bad, good, bad, good]):
            client.async_stream_infer("mlp", inputs, request_id=f"r{i}")
        got = [answers.get(timeout=60) for _ in range(5)]
    finally:
        client.stop_stream()
    assert sorted(r.get_response().id for r, e in got if e is None) == ["r0", "r2", "r4"]
    errors = [e.message() for r, e in got if e is not None]
    assert len(errors) == 2 and all("shape [2, 5], the model expects [-1, 4]" in m for m in errors)


# ------------------------------------------------------------------ errors
def test_errors_have_their_codes_and_the_server_keeps_answering(client):
    x = _inputs(grpcclient, _mlp_x())
    cases = [
        (lambda: client.infer("no_such_model", x), grpc.StatusCode.NOT_FOUND, "no_such_model"),
        (lambda: client.infer("mlp", x, model_version="9"), grpc.StatusCode.NOT_FOUND, "9"),
        (lambda: client.infer("../etc", x), grpc.StatusCode.INVALID_ARGUMENT, "name"),
        (lambda: client.infer("mlp", _inputs(grpcclient, {"X": (np.ones((2, 5), np.float32), "FP32")})),
         grpc.StatusCode.INVALID_ARGUMENT, "shape"),
        (lambda: client.infer("mlp", _inputs(grpcclient, {"X": (np.ones((2, 4), np.float64), "FP64")})),
         grpc.StatusCode.INVALID_ARGUMENT, "datatype FP64"),
        (lambda: client.infer("mlp", _inputs(grpcclient, {"Y": (np.ones((2, 4), np.float32), "FP32")})),
         grpc.StatusCode.INVALID_ARGUMENT, "unexpected input"),
        (lambda: client.infer("mlp", x, outputs=[grpcclient.InferRequestedOutput("NOPE")]),
         grpc.StatusCode.INVALID_ARGUMENT, "unknown output"),
        (lambda: client.infer("echo", _inputs(grpcclient, {"IN_FP32": (ECHO_CASES["FP32"], "FP32")})),
         grpc.StatusCode.INVALID_ARGUMENT, "missing input"),
        (lambda: client.unload_model("mlp"), grpc.StatusCode.UNAUTHENTICATED, "API key"),
        (lambda: client.get_system_shared_memory_status(), grpc.StatusCode.INVALID_ARGUMENT,
         "system shared memory is off on this server"),
        (lambda: client.unregister_cuda_shared_memory(), grpc.StatusCode.UNIMPLEMENTED,
         "CUDA shared memory is not available"),
        (lambda: client.update_trace_settings(settings={"trace_rate": "2"}), grpc.StatusCode.UNAUTHENTICATED,
         "API key"),
    ]
    for call, code, words in cases:
        status, message = _code(call)
        assert status == str(code) and words in message, (status, message)
    assert client.infer("mlp", x).as_numpy("OUT").shape == (2, 3)


def test_grpc_errors_are_counted_by_code(both, client):
    def counted(code: str) -> float:
        _, _, raw = both.request("GET", "/metrics")
        line = next((x for x in raw.decode().splitlines()
                     if x.startswith("tunegate_grpc_errors_total") and f'code="{code}"' in x), None)
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    before = counted("NOT_FOUND")
    _code(lambda: client.infer("no_such_model", _inputs(grpcclient, _mlp_x())))
    assert counted("NOT_FOUND") == before + 1


def test_a_message_over_the_body_limit_is_refused(client):
    big = {"X": (np.ones((1 << 17, 4), np.float32), "FP32")}  # 2 MiB, the limit is 1 MiB
    status, _ = _code(lambda: client.infer("mlp", _inputs(grpcclient, big)))
    assert status == str(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert client.is_server_live()


# ------------------------------------------------------------------ repository
def test_repository_index_load_and_unload_with_the_api_key(both, client):
    index = client.get_model_repository_index(as_json=True)["models"]
    over_http = both.json("POST", "/v2/repository/index", {})[1]
    assert index == [{k: v for k, v in row.items() if v != ""} for row in over_http]  # protobuf omits ""
    assert _code(lambda: client.unload_model("bools", headers={"x-api-key": "wrong"}))[0] == \
        str(grpc.StatusCode.UNAUTHENTICATED)
    status, message = _code(lambda: client.load_model("bools", config="{}", headers=KEY))
    assert status == str(grpc.StatusCode.INVALID_ARGUMENT) and "does not load under the given config" in message
    try:
        client.unload_model("bools", headers=KEY)
        assert not client.is_model_ready("bools")
        entry = next(m for m in client.get_model_repository_index(as_json=True)["models"] if m["name"] == "bools")
        assert entry["state"] == "UNAVAILABLE" and entry["reason"] == "unloaded"
    finally:
        client.load_model("bools", headers={"authorization": f"Bearer {API_KEY}"})
    assert client.is_model_ready("bools")
    wait_for(client.is_server_ready, what="ready again")


# ------------------------------------------------------------------ across protocols
def test_a_grpc_infer_is_labelled_later_over_http(both, client):
    x = np.array([[0.0, 5.0, 1.0, 0.0]], np.float32)  # class 1
    result = client.infer("clf", _inputs(grpcclient, {"X": (x, "FP32")}), request_id="grpc-req-1")
    assert int(result.as_numpy("P").argmax()) == 1
    doc = {"parameters": {"request_id": "grpc-req-1"},
           "inputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [1]}]}
    status, body = both.json("POST", "/v2/models/clf/feedback", doc, KEY)
    assert status == 200, body
    assert body["answered_by_version"] == "1"
    stored = read_feedback(feedback_dir(both.gateway.repo.root, "clf"))
    assert stored.labels.tolist()[-1:] == [1]
    np.testing.assert_array_equal(stored.inputs["X"][-1:], x)


def test_a_grpc_infer_without_an_id_gets_one_it_can_be_labelled_by(both, client):
    x = np.array([[0.0, 0.0, 7.0, 0.0]], np.float32)  # class 2
    given = client.infer("clf", _inputs(grpcclient, {"X": (x, "FP32")})).get_response().id
    assert given
    doc = {"parameters": {"request_id": given},
           "inputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [2]}]}
    status, body = both.json("POST", "/v2/models/clf/feedback", doc, KEY)
    assert status == 200, body
    assert client.infer("clf", _inputs(grpcclient, {"X": (x, "FP32")}), request_id="mine").get_response().id == "mine"


def test_requests_from_both_protocols_at_once(both):
    """gRPC and HTTP clients side by side on one batcher: every answer right."""
    errors: list[BaseException] = []

    def grpc_worker():
        with both.grpc() as c:
            for _ in range(10):
                assert c.infer("mlp_batched", _inputs(grpcclient, _mlp_x(1))).as_numpy("SUM").shape == (1, 4)

    def http_worker():
        with both.http() as c:
            for _ in range(10):
                assert c.infer("mlp_batched", _inputs(httpclient, _mlp_x(1))).as_numpy("SUM").shape == (1, 4)

    def guarded(fn):
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(fn,)) for fn in (grpc_worker, http_worker) * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
