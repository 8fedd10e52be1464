"""Fixtures for trainer tests: digits data in every format and a repository serving a
small digits model (version 1) published through converters, as the gateway would see it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
HOROVODRUN = Path(sys.executable).parent / "horovodrun"

@pytest.fixture
def needs_horovod() -> None:
    """Fail, not skip, without horovodrun: make test builds it, so its absence is a broken set-up."""
    if not HOROVODRUN.exists():
        pytest.fail(f"{HOROVODRUN} is missing: packaging/setup.sh builds and installs Horovod")


@pytest.fixture(scope="session")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32), d.target.astype(np.int64)


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory, digits) -> Path:
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x=digits[0], y=digits[1])
    return path


@pytest.fixture(scope="session")
def served_repo_template(tmp_path_factory, digits) -> Path:
    """A repository whose ``digits`` version 1 is a barely trained MLP (room to improve)."""
    script = f"""
import numpy as np, keras
from converters import publish_keras_model
from converters.examples import digits_mlp
from model_repo import Repository
keras.utils.set_random_seed(0)
d = np.load({str(tmp_path_factory.getbasetemp() / 'digits-base.npz')!r})
m = digits_mlp()
m.compile("adam", "sparse_categorical_crossentropy")
m.fit(d["x"][:200], d["y"][:200], epochs=2, verbose=0)
publish_keras_model(m, Repository({str(tmp_path_factory.getbasetemp() / 'template')!r}), "digits",
                    sample={{"x": d["x"][:16]}})
"""
    np.savez(tmp_path_factory.getbasetemp() / "digits-base.npz", x=digits[0], y=digits[1])
    # In a child process: the parent test process stays free of TensorFlow threads.
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, env=_env(), timeout=300)
    return tmp_path_factory.getbasetemp() / "template"


@pytest.fixture
def repo(served_repo_template, tmp_path) -> Path:
    path = tmp_path / "repo"
    shutil.copytree(served_repo_template, path)
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def finetune_command(repo: Path, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "tunegate_cli.py"), "finetune", "--repo", str(repo), "--json", *args]


def finetune(repo: Path, *args: str, timeout: float = 300) -> tuple[int, dict | None, str]:
    """Run ``tunegate finetune --json``; returns (exit status, outcome JSON, all output)."""
    proc = subprocess.run(finetune_command(repo, *args), capture_output=True, text=True, env=_env(),
                          cwd=ROOT, timeout=timeout)
    try:
        outcome = json.loads(proc.stdout) if proc.stdout.strip() else None
    except json.JSONDecodeError:
        outcome = None
    return proc.returncode, outcome, proc.stdout + proc.stderr


def versions(repo: Path, model: str = "digits") -> list[int]:
    from model_repo import Repository

    return Repository(repo).list_versions(model)


env = _env
