"""Triton's logging extension: log settings read and changed at run time over HTTP and
gRPC with the unmodified tritonclient, and what the tunegate loggers then write."""

from __future__ import annotations

import io
import logging
import re

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from model_repo import Repository

from . import models
from .grpc_fixture import both_settings, serve_both

pytestmark = pytest.mark.timeout(120)
DEFAULTS = {"log_file": "", "log_info": True, "log_warning": True, "log_error": True, "log_verbose_level": 0,
            "log_format": "default"}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("logged")
    models.publish(Repository(root), "mlp", models.mlp_fp32(), models.mlp_config("mlp"))
    with serve_both(both_settings(root, model_control="explicit", load_models=["mlp"])) as both:
        yield both


@pytest.fixture
def console():
    """A handler on the root logger, as ``tunegate serve``'s logging.basicConfig puts one."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def test_log_settings_round_trip_over_both_protocols(both):
    http, grpc = both.http(), both.grpc()
    assert http.get_log_settings() == DEFAULTS
    answer = grpc.get_log_settings(as_json=True)["settings"]
    assert answer["log_info"] == {"bool_param": True} and answer["log_format"] == {"string_param": "default"}
    changed = http.update_log_settings({"log_verbose_level": 2, "log_warning": False})
    assert changed == {**DEFAULTS, "log_verbose_level": 2, "log_warning": False}
    answer = grpc.update_log_settings({"log_format": "ISO8601", "log_verbose_level": 0, "log_warning": True},
                                      as_json=True)["settings"]
    assert answer["log_format"] == {"string_param": "ISO8601"} and answer["log_verbose_level"] == {"uint32_param": 0}
    assert http.get_log_settings() == {**DEFAULTS, "log_format": "ISO8601"}
    grpc.update_log_settings({"log_format": "default"})
    assert http.get_log_settings() == DEFAULTS


def test_log_settings_refuse_what_they_cannot_honour(both):
    http = both.http()
    for bad in ({"log_format": "XML"}, {"log_info": "yes"}, {"log_verbose_level": -1}, {"log_file": "/tmp/x"},
                {"log_colour": True}):
        with pytest.raises(httpclient.InferenceServerException) as caught:
            http.update_log_settings(bad)
        assert caught.value.status() == "400", bad
    with pytest.raises(grpcclient.InferenceServerException) as caught:
        both.grpc().update_log_settings({"log_format": "XML"})
    assert "INVALID_ARGUMENT" in caught.value.status()
    assert http.get_log_settings() == DEFAULTS


def _reload(both) -> None:
    """A real gateway event that the tunegate loggers report at INFO."""
    with both.http() as client:
        client.load_model("mlp")


def test_changing_log_settings_changes_what_the_gateway_writes(both, console):
    http = both.http()
    try:
        _reload(both)
        assert re.search(r"^INFO tunegate\.\S+: model mlp: serving versions", console.getvalue(), re.M)
        http.update_log_settings({"log_info": False})
        console.truncate(0), console.seek(0)
        _reload(both)
        assert "INFO" not in console.getvalue()
        logging.getLogger("tunegate.test").warning("still on")  # warnings still pass, info alone is off
        assert "WARNING tunegate.test: still on" in console.getvalue()
        http.update_log_settings({"log_info": True, "log_format": "ISO8601"})
        console.truncate(0), console.seek(0)
        _reload(both)
        assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ I tunegate\.\S+: model mlp: serving versions",
                         console.getvalue(), re.M), console.getvalue()
    finally:
        http.update_log_settings({"log_info": True, "log_format": "default"})
    mine = next(h for h in logging.getLogger().handlers if getattr(h, "stream", None) is console)
    assert mine.formatter._fmt.startswith("%(levelname)s")  # its own format back
