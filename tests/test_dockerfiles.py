"""The images, checked without a Docker engine: hadolint, and that they install the way
packaging/setup.sh does (the trainer's build stage runs setup.sh itself)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "packaging" / "docker"
GATEWAY, TRAINER = DOCKER / "Dockerfile.gateway", DOCKER / "Dockerfile.trainer"
SETUP = (ROOT / "packaging" / "setup.sh").read_text()


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def stages(path: Path) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions(path):
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: the dev extra has it (pip install -e '.[dev]', or make test)")
    return found


@pytest.mark.parametrize("dockerfile", [GATEWAY, TRAINER], ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    proc = subprocess.run([hadolint(), "--failure-threshold", "warning", str(dockerfile)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\nRUN cd /x && pip install foo\n")
    assert subprocess.run([hadolint(), "--failure-threshold", "warning", str(bad)], capture_output=True).returncode != 0


def test_trainer_builds_horovod_with_setup_sh_itself():
    build, runtime = stages(TRAINER)
    runs = " ".join(arg for kind, arg in build if kind == "RUN")
    # The same commands by construction: the build stage runs the script.
    assert "packaging/setup.sh" in runs and "--mount=type=cache,target=/cache" in runs
    assert "TUNEGATE_CACHE=/cache" in runs
    version = re.search(r"^HOROVOD_VERSION=(\S+)", SETUP, re.M).group(1)
    assert "horovod-$HOROVOD_VERSION-tf" in SETUP and "wheels=$CACHE/wheels/horovod-" in SETUP
    assert "/cache/wheels/horovod-*/horovod-*.whl" in runs  # where setup.sh caches the wheel
    rruns = " ".join(arg for kind, arg in runtime if kind == "RUN")
    assert "/wheels/horovod-*.whl" in rruns and "import horovod.tensorflow" in rruns
    assert not re.search(r"horovod==(?!" + re.escape(version) + ")", TRAINER.read_text())
    assert "build-essential" not in rruns  # no compilers in the runtime image


def _pip_install_lines(path: Path) -> list[str]:
    return re.findall(r"-m pip install[^&;]*", " ".join(a for k, a in instructions(path) if k == "RUN"))


def test_pip_steps_match_setup_sh_and_the_extras_exist():
    setup_pip = re.findall(r'"\$PY" -m pip install -q (.*)', SETUP)
    assert "--upgrade pip setuptools wheel" in setup_pip
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for dockerfile in (GATEWAY, TRAINER):
        lines = _pip_install_lines(dockerfile)
        assert any("--upgrade pip setuptools wheel" in line for line in lines), dockerfile.name
        for line in lines:
            for group in re.findall(r"'\.\[([^\]]*)\]'", line):
                for extra in group.split(","):
                    assert extra in extras | {"k8s"}, (dockerfile.name, extra)  # k8s: proposed extra
    gateway = " ".join(_pip_install_lines(GATEWAY))
    assert "tf" not in re.findall(r"'\.\[([^\]]*)\]'", gateway)[0].split(",")  # never TensorFlow
    assert "onnxruntime-gpu[cuda,cudnn]" in gateway and 'VARIANT" = cuda' in GATEWAY.read_text()


def test_images_run_as_the_chart_user_on_setup_sh_base():
    values = yaml.safe_load((ROOT / "helm" / "tunegate" / "values.yaml").read_text())
    uid = values["podSecurityContext"]["runAsUser"]
    for dockerfile in (GATEWAY, TRAINER):
        text = dockerfile.read_text()
        assert f"USER {uid}" in text and f"--uid {uid}" in text
        # setup.sh installs Debian packages with apt: the base is Debian, Python 3.11.
        assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text
