"""A removed version's statistics fold into its model's totals: /metrics does not grow with
every published version, and the sum over a model's versions never goes backwards."""

from __future__ import annotations

import numpy as np
import tritonclient.http as triton

from . import models
from .conftest import make_settings, serve, wait_for


def _success_by_version(server, model: str) -> dict[str, float]:
    _, _, raw = server.request("GET", "/metrics")
    out = {}
    for line in raw.decode().splitlines():
        if line.startswith("nv_inference_request_success{") and f'model="{model}"' in line:
            version = line.split('version="', 1)[1].split('"', 1)[0]
            out[version] = float(line.rsplit(" ", 1)[1])
    return out


class _Asker:
    def __init__(self, client) -> None:
        self.client, self.answered = client, 0

    def __call__(self, times: int = 1) -> str:
        tensor = triton.InferInput("X", [1, 2], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 2), np.float32))
        for _ in range(times):
            version = self.client.infer("addc", [tensor]).get_response()["model_version"]
            self.answered += 1
        return version


def test_removed_versions_fold_into_the_models_totals(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    with serve(make_settings(root)) as server:
        ask = _Asker(server.client())
        for number, value in enumerate((1.0, 2.0, 3.0), start=1):
            models.publish(server.repo, "addc", models.add_const_fp32(value), models.add_const_config("addc"))
            wait_for(lambda n=number: server.request("GET", f"/v2/models/addc/versions/{n}/ready")[0] == 200,
                     what=f"addc v{number} loaded")
            wait_for(lambda n=number: ask() == str(n), what=f"addc v{number} answering")
            ask(4)
        # The default policy serves the latest version: 1 and 2 are gone, their counts kept.
        wait_for(lambda: set(_success_by_version(server, "addc")) == {"3", "retired"},
                 what="removed versions folded")
        counts = _success_by_version(server, "addc")
        assert counts["3"] >= 5 and counts["retired"] >= 10
        assert sum(counts.values()) == ask.answered
