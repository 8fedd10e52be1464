"""The documentation site, built once per test session with warnings as errors (as `make
docs` builds it), into a temporary folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                            "-d", str(out / ".doctrees"), str(DOCS), str(out)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, f"the site does not build without warnings:\n{build.stdout}\n{build.stderr}"
    return out
