"""The repository as a tritonserver without an ONNX Runtime backend can serve it.

tunegate's repository is already Triton's layout with ``platform: "onnxruntime_onnx"``.
The tritonserver in the ``nvidia-pytriton`` wheel has only the Python backend, so
:func:`write_python_view` builds a sibling *view*: per model a ``config.pbtxt`` with the
same inputs, outputs, batching and version policy but ``backend: "python"``, and per
version a ``model.py`` (``triton_model.py``) beside a symlink to the version's
``model.onnx``. Versions appear in the view the way they appear in the repository: built
in a hidden directory, then renamed, so Triton in POLL mode never loads half of one.

:class:`TritonServer` starts that tritonserver (no PyTriton API involved): it assembles a
backend directory with the Python backend and the stub for the running interpreter, and
puts the interpreter's ``libpython`` directory on ``LD_LIBRARY_PATH``, which the stub needs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .config import CONFIG_FILE, ModelConfig, read_config, write_config
from .durable import fsync_path
from .manifest import MODEL_FILE
from .repository import Repository

MODEL_PY = Path(__file__).with_name("triton_model.py")
_HIDDEN = ".building-"


def python_backend_config(config: ModelConfig, *, instances: int = 1, intra_op_threads: int = 0) -> ModelConfig:
    """``config`` served by the Python backend: same tensors, batching, policy and
    onnxruntime parameters; ``intra_op_threads`` applies where the config names none."""
    wrapped = ModelConfig()
    wrapped.CopyFrom(config)
    wrapped.platform = ""
    wrapped.backend = "python"
    del wrapped.instance_group[:]
    group = wrapped.instance_group.add()
    group.kind = group.KIND_CPU
    group.count = sum(g.count for g in config.instance_group) or instances
    if intra_op_threads and "intra_op_thread_count" not in config.parameters:
        wrapped.parameters["intra_op_thread_count"].string_value = str(intra_op_threads)
    return wrapped


def write_python_view(repo: Repository, dest: str | os.PathLike[str], models: Iterable[str] | None = None,
                      *, instances: int = 1, intra_op_threads: int = 0) -> dict[str, list[int]]:
    """Bring ``dest`` in line with ``repo`` (idempotent; call again after a publish).
    Returns the versions now in the view, by model."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    result = {}
    for model in (repo.list_models() if models is None else list(models)):
        config = python_backend_config(repo.read_config(model), instances=instances,
                                       intra_op_threads=intra_op_threads)
        target = dest / model
        target.mkdir(exist_ok=True)
        config_path = target / CONFIG_FILE
        if not config_path.exists() or read_config(config_path) != config:
            write_config(config_path, config)
        wanted = repo.list_versions(model)
        for version in wanted:
            if not (target / str(version)).is_dir():
                _add_version(target, version, repo.model_path(model, version))
        for entry in target.iterdir():
            if entry.name.isdigit() and int(entry.name) not in wanted:
                hidden = target / f"{_HIDDEN}{uuid.uuid4().hex}"
                entry.rename(hidden)  # out of Triton's sight first, then deleted
                shutil.rmtree(hidden)
        result[model] = sorted(wanted)
    return result


def _add_version(target: Path, version: int, onnx_path: Path) -> None:
    staging = target / f"{_HIDDEN}{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        shutil.copyfile(MODEL_PY, staging / "model.py")
        # Published versions never change, so a link is as good as a copy and costs nothing.
        (staging / MODEL_FILE).symlink_to(onnx_path.resolve())
        fsync_path(staging)
        staging.rename(target / str(version))
        fsync_path(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# ----------------------------------------------------------------- tritonserver
@dataclass(frozen=True)
class TritonInstall:
    """Where the wheel's tritonserver, Python backend and stubs are."""

    root: Path

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def libs(self) -> Path:
        """The wheel's vendored libraries (libcudart and friends): the stub finds them through
        an RPATH relative to where the wheel put it, which a copied stub loses."""
        return self.root.parent.parent / "nvidia_pytriton.libs"

    def stub(self, version: str | None = None) -> Path:
        version = version or f"{sys.version_info[0]}.{sys.version_info[1]}"
        return self.root / "python_backend_stubs" / version / "triton_python_backend_stub"


def find_tritonserver() -> TritonInstall | None:
    """The tritonserver of ``$TUNEGATE_TRITONSERVER_DIR`` or of the installed ``nvidia-pytriton``
    wheel (located without importing it), or None with neither."""
    candidates = []
    if os.environ.get("TUNEGATE_TRITONSERVER_DIR"):
        candidates.append(Path(os.environ["TUNEGATE_TRITONSERVER_DIR"]))
    spec = importlib.util.find_spec("pytriton")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "tritonserver" for p in spec.submodule_search_locations]
    for root in candidates:
        install = TritonInstall(root)
        if install.binary.is_file() and install.stub().is_file():
            return install
    return None


STUB_PACKAGES_HINT = 'pip install --no-deps --target "$VIRTUAL_ENV/triton-stub" "numpy<2"'


def default_stub_packages() -> Path | None:
    """``$TUNEGATE_TRITON_STUB_PACKAGES``, else ``<environment>/triton-stub`` when present."""
    if os.environ.get("TUNEGATE_TRITON_STUB_PACKAGES"):
        return Path(os.environ["TUNEGATE_TRITON_STUB_PACKAGES"])
    path = Path(sys.prefix) / "triton-stub"
    return path if path.is_dir() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TritonServer:
    """One tritonserver process on 127.0.0.1 (use as a context manager, or start/stop)."""

    install: TritonInstall
    model_repository: Path
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    poll_seconds: float | None = None  # None: model control "none"; else POLL every so often
    log_file: Path | None = None
    stub_packages: Path | None = field(default_factory=lambda: default_stub_packages())
    """A directory holding numpy<2 for the stub (see ``_stub_environment``)."""
    extra_args: Sequence[str] = ()
    process: subprocess.Popen | None = None
    _workdir: Path | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def _backends(self) -> Path:
        """A backend directory with the Python backend and the stub for this interpreter (the
        wheel keeps one stub per Python version apart from the backend)."""
        assert self._workdir is not None
        python = self._workdir / "backends" / "python"
        python.mkdir(parents=True)
        for entry in (self.install.root / "backends" / "python").iterdir():
            if entry.is_file():
                (python / entry.name).symlink_to(entry)
        shutil.copy2(self.install.stub(), python / "triton_python_backend_stub")
        return python.parent

    def _stub_environment(self) -> Path:
        """A virtual environment for the stub: returns its ``bin`` directory.

        The stub embeds libpython in isolated mode, so PYTHONPATH is ignored, and it finds its
        prefix from ``python3`` on PATH. A ``python3`` of a virtual environment put first on
        PATH gives it that environment's site-packages: ``stub_packages`` (numpy<2: the
        wheel's stub reads numpy 1.x arrays, and with numpy 2's changed ABI every output
        tensor comes back empty), then this interpreter's own (onnxruntime)."""
        assert self._workdir is not None
        root = self._workdir / "stubenv"
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        site = root / "lib" / f"python{version}" / "site-packages"
        site.mkdir(parents=True)
        (root / "bin").mkdir()
        base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
        (root / "bin" / "python3").symlink_to(base)
        (root / "pyvenv.cfg").write_text(f"home = {base.parent}\ninclude-system-site-packages = false\n"
                                         f"version = {sys.version.split()[0]}\n")
        paths = ([str(self.stub_packages)] if self.stub_packages else []) + [
            p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
        (site / "tunegate-stub.pth").write_text("\n".join(paths) + "\n")
        return root / "bin"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (libdir, str(self.install.libs), env.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = os.pathsep.join([str(self._stub_environment()), env.get("PATH", "")])
        return env

    def command(self) -> list[str]:
        assert self._workdir is not None
        args = [str(self.install.binary), f"--model-repository={self.model_repository}",
                f"--backend-directory={self._backends()}", f"--http-port={self.http_port}",
                f"--grpc-port={self.grpc_port}", f"--metrics-port={self.metrics_port}",
                "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
                f"--cache-directory={self.install.root / 'caches'}", "--exit-on-error=true",
                "--strict-readiness=true", "--log-verbose=0"]
        if self.poll_seconds is not None:
            args += ["--model-control-mode=poll", f"--repository-poll-secs={max(1, round(self.poll_seconds))}"]
        return args + list(self.extra_args)

    def start(self, timeout: float = 120.0) -> TritonServer:
        self._workdir = Path(tempfile.mkdtemp(prefix="tunegate-triton-"))
        log = open(self.log_file or self._workdir / "tritonserver.log", "ab")
        try:
            self.process = subprocess.Popen(self.command(), env=self.environment(), stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        self.wait_ready(timeout)
        return self

    def log_tail(self, chars: int = 4000) -> str:
        path = self.log_file or (self._workdir / "tritonserver.log" if self._workdir else None)
        with contextlib.suppress(OSError):
            return path.read_text(errors="replace")[-chars:] if path else ""
        return ""

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited ({self.process and self.process.returncode}):\n"
                                   f"{self.log_tail(20000)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"tritonserver not ready after {timeout:.0f}s:\n{self.log_tail(20000)}")
            time.sleep(0.1)

    def kill(self) -> None:
        """Die at once, as a crashed server would (no graceful drain)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
