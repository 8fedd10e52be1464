"""The ``tunegate`` command as an operator meets it, run as a real subprocess: one clear line
and the right exit status for each mistake, never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import __version__
from gateway.cli import add_arguments, settings_from
from model_repo import Repository

from .gateway import models
from .gateway.conftest import wait_for
from .model_repo.conftest import publish_bytes


def tunegate(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("TUNEGATE_")}
    return subprocess.run([sys.executable, "-m", "tunegate_cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**environ, **(env or {})})


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repository:
    repo = Repository(tmp_path_factory.mktemp("cli") / "repo")
    models.publish(repo, "mlp", models.mlp_fp32(), models.mlp_config("mlp"))
    return repo


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        yield holder.getsockname()[1]


def test_version() -> None:
    result = tunegate("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"tunegate {__version__}"


@pytest.mark.parametrize("argv, usage", [
    (["serve", "--no-such-flag"], "usage: tunegate serve "),
    (["models", "list", "--no-such-flag"], "usage: tunegate models list "),
    (["models", "--no-such-flag", "list"], "usage: tunegate models list "),
])
def test_a_wrong_flag_shows_the_usage_of_the_command_used(argv: list[str], usage: str) -> None:
    result = tunegate(*argv)
    assert result.returncode == 2
    assert result.stderr.startswith(usage), result.stderr  # it showed "usage: tunegate [-h] COMMAND ..."
    assert result.stderr.rstrip().endswith("error: unrecognized arguments: --no-such-flag")


def test_a_taken_port_is_one_line_before_any_model_loads(repo: Repository) -> None:
    with taken_port() as port:
        result = tunegate("serve", "--repo", str(repo.root), "--port", str(port), "--grpc-port", "0")
    assert result.returncode == 2
    line = one_line(result)  # it loaded every model, then printed a 22-line OSError traceback
    assert line.startswith(f"tunegate serve: error: cannot listen on 127.0.0.1:{port}: the port is already in use")
    assert "--port" in line and "make demo PORT=" in line


def test_an_address_not_on_this_machine_is_one_line(repo: Repository) -> None:
    result = tunegate("serve", "--repo", str(repo.root), "--host", "192.0.2.1", "--port", "0",  # TEST-NET-1
                      "--grpc-port", "0")
    assert result.returncode == 2
    assert "cannot listen on 192.0.2.1:0: 192.0.2.1 is not an address of this machine" in one_line(result)


def test_bad_settings_name_their_source(repo: Repository, tmp_path: Path) -> None:
    flag = tunegate("serve", "--repo", str(repo.root), "--port", "99999", "--grpc-port", "0")
    assert flag.returncode == 2
    assert one_line(flag) == ("tunegate serve: error: invalid setting port = 99999 (from --port): "
                              "must be less than or equal to 65535")
    env = tunegate("serve", "--repo", str(repo.root), "--grpc-port", "0", env={"TUNEGATE_RUNTIME__PROVIDER": "gpu"})
    assert env.returncode == 2
    assert one_line(env) == ("tunegate serve: error: invalid setting runtime.provider = 'gpu' (from environment "
                             "variable TUNEGATE_RUNTIME__PROVIDER): must be one of 'auto', 'cuda' or 'cpu'")
    config = tmp_path / "gateway.toml"
    config.write_text('prot = 8001\n[runtime]\ninstance_count = 0\n')
    both = tunegate("serve", "--repo", str(repo.root), "--grpc-port", "0", "--config", str(config))
    assert both.returncode == 2 and "Traceback" not in both.stderr
    assert sorted(both.stderr.splitlines()) == sorted([  # one line per problem
        f"tunegate serve: error: invalid setting runtime.instance_count = 0 (from config file {config}): "
        "must be greater than or equal to 1",
        f"tunegate serve: error: unknown setting prot = 8001 (from config file {config}); did you mean port?",
    ])


def test_a_start_up_failure_of_ours_is_one_line_and_status_1(tmp_path: Path) -> None:
    result = tunegate("serve", "--repo", str(tmp_path / "nowhere"), "--port", "0", "--grpc-port", "0")
    assert result.returncode == 1
    assert one_line(result) == f"tunegate serve: error: model repository {tmp_path / 'nowhere'} is not a directory"


def test_exit_on_error_stops_at_start_up_when_a_model_cannot_load(tmp_path: Path) -> None:
    broken = Repository(tmp_path / "repo")
    publish_bytes(broken, "junk", b"not an onnx model")
    result = tunegate("serve", "--repo", str(broken.root), "--port", "0", "--grpc-port", "0", "--exit-on-error",
                      "--log-level", "ERROR", "--provider", "cpu")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1].startswith("tunegate serve: error: "), result.stderr
    assert "junk" in result.stderr.splitlines()[-1]


@contextlib.contextmanager
def gateway(repo: Repository, *flags: str, env: dict[str, str] | None = None) -> Iterator[int]:
    """``tunegate serve --port 0`` in a subprocess; yields the port its log line names."""
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("TUNEGATE_")}
    server = subprocess.Popen([sys.executable, "-m", "tunegate_cli", "serve", "--repo", str(repo.root), "--port", "0",
                               "--grpc-port", "0", "--provider", "cpu", *flags], stderr=subprocess.PIPE, text=True,
                              env={**environ, **(env or {})})
    try:
        match = None
        for line in server.stderr:  # the log line names the port actually bound, not 0
            match = re.search(r"serving .* on http://127\.0\.0\.1:(\d+) ", line)
            if match:
                break
        assert match and int(match.group(1)) > 0
        yield int(match.group(1))
    finally:
        server.terminate()
        server.wait(60)
        server.stderr.close()
    assert server.returncode == 0


def test_serving_on_port_0_logs_the_port_it_got(repo: Repository) -> None:
    with gateway(repo) as port, socket.create_connection(("127.0.0.1", port), timeout=30):
        pass


def _get(port: int, path: str, method: str = "GET") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def _repo_with_pending_canary(tmp_path: Path) -> Repository:
    repo = Repository(tmp_path / "repo")
    models.publish(repo, "mlp", models.mlp_fp32(0), models.mlp_config("mlp"))
    with repo.staging("mlp") as staged:  # what `tunegate finetune` publishes: a pending canary
        (staged / "model.onnx").write_bytes(models.mlp_fp32(1))
        repo.publish("mlp", staged, parent_version=1, training={"world_size": 2, "mode": "allreduce"})
    return repo


def _serves(port: int, ready: set[int], not_ready: set[int]) -> bool:
    return (all(_get(port, f"/v2/models/mlp/versions/{v}/ready")[0] == 200 for v in ready)
            and all(_get(port, f"/v2/models/mlp/versions/{v}/ready")[0] != 200 for v in not_ready))


@pytest.mark.parametrize("action, serving, gone", [("rollback", 1, 2), ("promote", 2, 1)])
def test_a_decision_from_the_cli_is_applied_by_a_polling_gateway_by_itself(
        tmp_path: Path, action: str, serving: int, gone: int) -> None:
    repo = _repo_with_pending_canary(tmp_path)
    # No rollback window: the replaced version is unloaded at once (a warm one is tested in
    # tests/gateway/test_rollback.py).
    env = {"TUNEGATE_POLL_INTERVAL_SECONDS": "0.1", "TUNEGATE_LOOP__ROLLBACK_WINDOW_SECONDS": "0"}
    with gateway(repo, "--model-control", "poll", env=env) as port:
        wait_for(lambda: _get(port, "/v2/health/ready")[0] == 200, what="initial load")
        assert _get(port, "/v2/models/mlp/canary")[1]["canary"]["version"] == 2
        decided = tunegate("models", action, "mlp", "--repo", str(repo.root))
        assert decided.returncode == 0, decided.stderr
        assert "within one poll interval" in decided.stderr
        # No load call: the watcher sees the manifest change and the registry applies the plan.
        wait_for(lambda: _serves(port, {serving}, {gone}), what=f"the gateway to apply the {action}")
        assert "canary" not in _get(port, "/v2/models/mlp/canary")[1]
    assert repo.read_manifest("mlp", 2).extra["canary"]["state"] == ("promoted" if action == "promote"
                                                                     else "rolled_back")


def test_the_gateway_does_not_overwrite_a_decision_the_cli_made_meanwhile(tmp_path: Path) -> None:
    repo = _repo_with_pending_canary(tmp_path)
    with gateway(repo, "--model-control", "none") as port:  # no watcher: the gateway still has the canary live
        wait_for(lambda: _get(port, "/v2/health/ready")[0] == 200, what="initial load")
        rolled = tunegate("models", "rollback", "mlp", "--repo", str(repo.root))
        assert rolled.returncode == 0, rolled.stderr
        status, body = _get(port, "/v2/models/mlp/canary/promote", "POST")
        assert status == 200 and body["state"] == "rolled_back", body
        assert _serves(port, {1}, {2})
    manifest = repo.read_manifest("mlp", 2)
    assert manifest.status == "rejected"
    assert manifest.extra["canary"]["state"] == "rolled_back"
    assert "tunegate models rollback" in manifest.extra["canary"]["reason"]


@pytest.mark.parametrize("argv, strict, exit_on_error", [
    ([], True, False),
    (["--no-strict-readiness", "--exit-on-error"], False, True),
    (["--strict-readiness"], True, False),
])
def test_readiness_and_exit_flags_reach_the_settings(argv, strict, exit_on_error) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = settings_from(parser.parse_args(argv))
    assert (settings.strict_readiness, settings.exit_on_error) == (strict, exit_on_error)


def test_an_unset_flag_leaves_the_environment_in_charge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEGATE_STRICT_READINESS", "false")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert settings_from(parser.parse_args([])).strict_readiness is False
    assert settings_from(parser.parse_args(["--strict-readiness"])).strict_readiness is True
