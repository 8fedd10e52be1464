"""The tour (docs/tutorial.md) runs as written: every ``sh`` and ``python`` fenced block, in
order, in one empty folder, against a real gateway on 127.0.0.1.

The runner is small on purpose (no plugin): the block that starts ``tunegate serve`` is the
one a reader runs "in another shell", so it is started in the background and waited for;
the tour's ports (8000, 8001) are swapped for free ones so the test never meets another
server. Anything else a block does is real: TensorFlow trains and converts, the official
tritonclient asks, feedback is stored, Horovod fine-tunes, the CLI promotes and rolls back.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from model_repo import Repository
from model_repo.triton import free_port

from .conftest import DOCS

TOUR = DOCS / "tutorial.md"
FENCE = re.compile(r"^```(sh|python)\n(.*?)^```$", re.M | re.S)
BLOCK_TIMEOUT = 300


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(m[1], m[2]) for m in FENCE.finditer(page.read_text())]


def _ports(code: str, http: int, grpc: int) -> str:
    code = re.sub(r"\b(?:localhost|127\.0\.0\.1):8000\b", f"127.0.0.1:{http}", code)
    return re.sub(r"\b(?:localhost|127\.0\.0\.1):8001\b", f"127.0.0.1:{grpc}", code)


def _wait_ready(port: int, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "tunegate serve exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("tunegate serve never became ready")


def test_the_tour_runs_as_written(tmp_path):
    found = blocks(TOUR)
    assert [lang for lang, _ in found].count("python") >= 3 and len(found) >= 7, "the tour lost its blocks"
    http, grpc = free_port(), free_port()
    while grpc == http:  # two asks of the kernel may name the same free port
        grpc = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    server = None
    log = (tmp_path / "serve.log").open("w")
    try:
        for lang, code in found:
            code = _ports(code, http, grpc)
            if code.startswith("tunegate serve"):
                argv = [*code.split(), "--port", str(http), "--grpc-port", str(grpc)]
                server = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
                _wait_ready(http, server)
                continue
            argv = ["bash", "-euo", "pipefail", "-c", code] if lang == "sh" else [sys.executable, "-c", code]
            done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
            assert done.returncode == 0, f"this {lang} block failed ({done.returncode}):\n{code}\n" \
                                         f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
        assert server is not None, "the tour never starts a gateway"
        # What the tour says happened, happened: version 2 was fine-tuned from 1, promoted,
        # then rolled back, and version 1 serves again.
        repo = Repository(tmp_path / "repo")
        assert repo.list_versions("digits") == [1, 2]
        assert repo.read_manifest("digits", 2).parent_version == 1
        assert repo.read_manifest("digits", 2).status == "rejected"
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/digits/versions/1/ready", timeout=5) as a:
            assert a.status == 200
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        log.close()
