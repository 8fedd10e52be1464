"""What a new user met (issue 24) and the code now answers: each checked on a real gateway or
the real function, as the user met it."""

from __future__ import annotations

import gzip
import json
import logging

import pytest

from model_repo import Repository
from tests.gateway import models
from tests.gateway.conftest import make_settings, serve
from trainer.errors import DataError
from trainer.launcher import check_data_paths

MAX_BATCH = 16


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    root = tmp_path_factory.mktemp("frictions") / "repo"
    models.publish(Repository(root), "mlp", models.mlp_fp32(), models.mlp_config("mlp", max_batch_size=MAX_BATCH))
    with serve(make_settings(root)) as server:
        yield server


def _feedback(rows: int) -> dict:
    return {"inputs": [{"name": "X", "datatype": "FP32", "shape": [rows, 4], "data": [0.5] * (4 * rows)},
                       {"name": "label", "datatype": "INT64", "shape": [rows], "data": [1] * rows}]}


def test_feedback_over_max_batch_size_is_refused_with_a_message_saying_to_split(gateway):
    status, body = gateway.json("POST", "/v2/models/mlp/feedback", _feedback(MAX_BATCH + 4))
    assert status == 400
    assert body["error"] == (f"feedback tensor 'X' has {MAX_BATCH + 4} rows; one feedback call takes at most the "
                             f"model's max_batch_size, {MAX_BATCH}: send the rows in several calls of up to {MAX_BATCH}")
    status, body = gateway.json("POST", "/v2/models/mlp/feedback", _feedback(MAX_BATCH))
    assert status == 200, body


def test_an_unknown_model_says_how_to_list_the_models(gateway):
    status, body = gateway.json("GET", "/v2/models/nosuch")
    assert status == 404
    assert "POST /v2/repository/index lists the models" in body["error"]


def test_an_undecodable_body_is_one_warning_line_not_a_traceback(gateway, caplog):
    with caplog.at_level(logging.INFO, logger="aiohttp.server"):
        for encoding in ("gzip", "deflate"):
            status, _, answer = gateway.request("POST", "/v2/models/mlp/infer", b"not compressed at all",
                                                {"Content-Type": "application/json", "Content-Encoding": encoding})
            assert status == 400, answer
        # a good compressed body still works
        good = gzip.compress(json.dumps({"inputs": [_feedback(1)["inputs"][0]]}).encode())
        status, _, answer = gateway.request("POST", "/v2/models/mlp/infer", good,
                                            {"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert status == 200, answer
        gateway.call(lambda: None)  # the server's loop has logged what it had to
    server_lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert server_lines and all(r.levelno == logging.WARNING and r.exc_info is None for r in server_lines)
    assert all("Can not decode content-encoding" in r.getMessage() for r in server_lines)


@pytest.mark.parametrize("typed", ["feedbak:", "Feedback", "fedback:"])
def test_a_misspelt_feedback_scheme_asks_did_you_mean(typed):
    with pytest.raises(DataError, match=r"did you mean feedback:\?"):
        check_data_paths([typed])


def test_a_missing_file_gets_no_feedback_hint(tmp_path):
    with pytest.raises(DataError) as refused:
        check_data_paths([str(tmp_path / "more.npz")])
    assert "did you mean" not in str(refused.value)
