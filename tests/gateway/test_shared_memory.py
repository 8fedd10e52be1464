"""Triton's system shared-memory extension with the official client's own shm utilities."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from .conftest import build_repository, make_settings, serve


@pytest.fixture(scope="module")
def shm_gateway(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    build_repository(root)
    with serve(make_settings(root, allow_shared_memory=True)) as server:
        yield server


def test_inputs_and_outputs_travel_through_shared_memory(shm_gateway):
    client = shm_gateway.client()
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 3
    inputs = shm.create_shared_memory_region("tg_in", "/tg_in", x.nbytes)
    outputs = shm.create_shared_memory_region("tg_out", "/tg_out", x.nbytes)
    try:
        shm.set_shared_memory_region(inputs, [x])
        client.register_system_shared_memory("tg_in", "/tg_in", x.nbytes)
        client.register_system_shared_memory("tg_out", "/tg_out", x.nbytes)
        names = {r["name"] for r in client.get_system_shared_memory_status()}
        assert names == {"tg_in", "tg_out"}

        tensor = triton.InferInput("X", [2, 4], "FP32")
        tensor.set_shared_memory("tg_in", x.nbytes)
        wanted = triton.InferRequestedOutput("SUM", binary_data=True)
        wanted.set_shared_memory("tg_out", x.nbytes)
        result = client.infer("mlp", [tensor], outputs=[wanted])
        out = result.get_output("SUM")
        assert out["parameters"]["shared_memory_region"] == "tg_out"
        got = shm.get_contents_as_numpy(outputs, np.float32, [2, 4])
        np.testing.assert_array_equal(got, x + 1)

        # Bounds are checked against the region, and an unknown region is a clear 400.
        too_big = triton.InferInput("X", [4, 4], "FP32")
        too_big.set_shared_memory("tg_in", 64)
        with pytest.raises(InferenceServerException, match="runs past"):
            client.infer("mlp", [too_big])
        gone = triton.InferInput("X", [2, 4], "FP32")
        gone.set_shared_memory("nope", x.nbytes)
        with pytest.raises(InferenceServerException, match="no shared memory region 'nope'"):
            client.infer("mlp", [gone])
        with pytest.raises(InferenceServerException, match="already registered"):
            client.register_system_shared_memory("tg_in", "/tg_in", x.nbytes)
        with pytest.raises(InferenceServerException, match="does not fit"):
            client.register_system_shared_memory("big", "/tg_in", x.nbytes * 2)
        with pytest.raises(InferenceServerException, match="not a POSIX shared memory name"):
            client.register_system_shared_memory("evil", "/../etc/passwd", 8)
    finally:
        client.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(inputs)
        shm.destroy_shared_memory_region(outputs)
    assert client.get_system_shared_memory_status() == []


def test_shared_memory_is_off_by_default_and_cuda_is_refused(gateway):
    client = gateway.client()
    with pytest.raises(InferenceServerException, match="allow_shared_memory"):
        client.get_system_shared_memory_status()
    with pytest.raises(InferenceServerException, match="CUDA shared memory is not supported"):
        client.get_cuda_shared_memory_status()


def test_grpc_inputs_and_outputs_travel_through_shared_memory(tmp_path):
    import tritonclient.grpc as grpcclient

    from .grpc_fixture import both_settings, build_both_repository, serve_both

    build_both_repository(tmp_path / "repo")
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 7
    with serve_both(both_settings(tmp_path / "repo", allow_shared_memory=True)) as both:
        client = both.grpc()
        assert "system_shared_memory" in client.get_server_metadata(as_json=True)["extensions"]
        inputs = shm.create_shared_memory_region("g_in", "/tg_g_in", x.nbytes)
        outputs = shm.create_shared_memory_region("g_out", "/tg_g_out", x.nbytes)
        try:
            shm.set_shared_memory_region(inputs, [x])
            client.register_system_shared_memory("g_in", "/tg_g_in", x.nbytes)
            client.register_system_shared_memory("g_out", "/tg_g_out", x.nbytes)
            status = client.get_system_shared_memory_status(as_json=True)["regions"]
            assert set(status) == {"g_in", "g_out"} and int(status["g_in"]["byte_size"]) == x.nbytes
            tensor = grpcclient.InferInput("X", [2, 4], "FP32")
            tensor.set_shared_memory("g_in", x.nbytes)
            wanted = grpcclient.InferRequestedOutput("SUM")
            wanted.set_shared_memory("g_out", x.nbytes)
            plain = grpcclient.InferRequestedOutput("OUT")
            result = client.infer("mlp", [tensor], outputs=[wanted, plain])
            np.testing.assert_array_equal(shm.get_contents_as_numpy(outputs, np.float32, [2, 4]), x + 1)
            assert result.as_numpy("OUT").shape == (2, 3)  # a raw output beside one in shared memory
            short = grpcclient.InferInput("X", [2, 4], "FP32")
            short.set_shared_memory("g_in", 16)
            with pytest.raises(InferenceServerException, match="bytes of binary data, expected"):
                client.infer("mlp", [short])
        finally:
            client.unregister_system_shared_memory()
            shm.destroy_shared_memory_region(inputs)
            shm.destroy_shared_memory_region(outputs)
        assert client.get_system_shared_memory_status(as_json=True).get("regions", {}) == {}
