"""Settings errors name the setting, the value, where it came from and what is allowed: one
line per problem, no pydantic dump (it named an internal class and a documentation URL)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gateway.settings import ConfigFileError, load_settings


def _problems(config: Path | None = None, **flags) -> list[str]:
    with pytest.raises(ConfigFileError) as caught:
        load_settings(config, **flags)
    assert caught.value.exit_code == 2
    lines = str(caught.value).splitlines()
    for line in lines:
        assert "pydantic" not in line and "_WithFile" not in line and "validation error" not in line, line
    return lines


@pytest.fixture(autouse=True)
def _no_tunegate_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("TUNEGATE_"):
            monkeypatch.delenv(key)


def test_a_flag_out_of_range_names_the_flag_and_the_limit() -> None:
    assert _problems(port=99999) == [
        "invalid setting port = 99999 (from --port): must be less than or equal to 65535"]


def test_a_nested_environment_variable_is_named_with_the_values_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEGATE_RUNTIME__PROVIDER", "gpu")
    assert _problems() == [
        "invalid setting runtime.provider = 'gpu' (from environment variable TUNEGATE_RUNTIME__PROVIDER): "
        "must be one of 'auto', 'cuda' or 'cpu'"]


def test_every_problem_in_a_file_gets_its_own_line_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('hots = "0.0.0.0"\n[runtime]\ninstance_count = 0\n[models.m]\nproviderr = "cpu"\n')
    assert sorted(_problems(config)) == sorted([
        f"invalid setting runtime.instance_count = 0 (from config file {config}): must be greater than or equal to 1",
        f"unknown setting models.m.providerr = 'cpu' (from config file {config}); did you mean provider?",
        f"unknown setting hots = '0.0.0.0' (from config file {config}); did you mean host?",
    ])


def test_an_unknown_setting_with_no_near_name_lists_the_settings_there(tmp_path: Path) -> None:
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps({"runtime": {"zzz": 1}}))
    (line,) = _problems(config)
    assert line.startswith(f"unknown setting runtime.zzz = 1 (from config file {config}); the settings in runtime are ")
    assert "provider" in line and "instance_count" in line


def test_the_source_that_won_is_the_one_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('port = 1\n[loop]\ncanary_fraction = 2.0\n')
    monkeypatch.setenv("TUNEGATE_PORT", "70000")
    monkeypatch.setenv("TUNEGATE_LOOP", '{"canary": "perhaps"}')  # a JSON table merged with the file's [loop]
    lines = _problems(config, port=99999)
    assert "invalid setting port = 99999 (from --port): must be less than or equal to 65535" in lines
    assert ("invalid setting loop.canary = 'perhaps' (from environment variable TUNEGATE_LOOP): "
            "must be a valid boolean, unable to interpret input") in lines
    assert f"invalid setting loop.canary_fraction = 2.0 (from config file {config}): " \
           "must be less than or equal to 1" in lines
    assert len(lines) == 3


def test_an_environment_variable_that_is_not_json_where_json_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEGATE_LOAD_MODELS", "a,b")
    (line,) = _problems()
    assert line.startswith("invalid setting load_models = 'a,b' (from environment variable TUNEGATE_LOAD_MODELS): "
                           "must be JSON")


def test_a_list_item_is_located_by_index(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('load_models = ["a", 3]\n')
    assert _problems(config) == [
        f"invalid setting load_models[1] = 3 (from config file {config}): must be a valid string"]


def test_valid_settings_still_load_with_the_same_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('port = 9001\n[runtime]\nprovider = "cpu"\ninstance_count = 2\n')
    monkeypatch.setenv("TUNEGATE_RUNTIME__INSTANCE_COUNT", "3")
    settings = load_settings(config, port=9002)
    assert (settings.port, settings.runtime.provider, settings.runtime.instance_count) == (9002, "cpu", 3)
