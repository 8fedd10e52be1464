"""Start the job on N ranks with ``horovodrun --gloo`` and read back its outcome.

The launcher imports neither TensorFlow nor Horovod; it checks what it can cheaply (the
model exists and has a Keras source, the data files exist, the options make sense) so a
typo fails in a second instead of after N TensorFlow start-ups.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .data import FEEDBACK_SCHEME
from .distributed import default_ranks, usable_cores
from .errors import OUTCOME_IN_RESULT_FILE, DataError, JobFailed, TrainerError, error_from_result
from .options import to_argv

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Topology:
    np: int
    hosts: str  # horovodrun -H syntax: host:slots,...
    elastic: bool = False
    min_np: int | None = None
    max_np: int | None = None
    discovery_script: str | None = None


def topology(np_: int | None, hosts: str | None, *, elastic: bool = False, min_np: int | None = None,
             max_np: int | None = None, discovery_script: str | None = None) -> Topology:
    if hosts:
        try:
            slots = sum(int(h.rsplit(":", 1)[1]) for h in hosts.split(","))
        except (IndexError, ValueError):
            raise DataError(f"--hosts {hosts!r}: expected host:slots[,host:slots...]") from None
    else:
        slots = np_ or default_ranks(usable_cores())
        hosts = f"localhost:{slots}"
    n = np_ or slots
    if n < 1 or n > slots:
        raise DataError(f"--np {n} does not fit the {slots} slots of --hosts {hosts}")
    if elastic:
        min_np, max_np = min_np or n, max_np or n
        if not 1 <= min_np <= n <= max_np:
            raise DataError(f"elastic needs --min-np <= --np <= --max-np, got {min_np}, {n}, {max_np}")
    return Topology(n, hosts, elastic, min_np, max_np, discovery_script)


def check_data_paths(paths: list[str]) -> None:
    for spec in paths:
        if spec.startswith(FEEDBACK_SCHEME):
            continue
        if not Path(spec).exists():
            from .spark_data import looks_like_table

            hint = " (a Spark SQL table is read with --launcher spark)" if looks_like_table(spec) else ""
            # A misspelt scheme ("feedbak:", "Feedback") is not a file name: say what was meant.
            import difflib

            head = spec.partition(":")[0].lower()
            if "/" not in head and "." not in head and \
                    difflib.SequenceMatcher(None, head, FEEDBACK_SCHEME[:-1]).ratio() >= 0.75:
                hint = f" (did you mean {FEEDBACK_SCHEME}{spec.partition(':')[2]}?)"
            raise DataError(f"data file not found: {spec}{hint}")


def command(topo: Topology, job_argv: list[str], result_file: Path, workdir: Path) -> list[str]:
    horovodrun = shutil.which("horovodrun", path=str(Path(sys.executable).parent)) or shutil.which("horovodrun")
    if horovodrun is None:
        raise TrainerError("horovodrun not found; install horovod (see packaging/setup.sh)")
    cmd = [horovodrun, "-np", str(topo.np), "--gloo"]
    if topo.elastic:
        script = topo.discovery_script or _discovery_script(topo.hosts, workdir)
        cmd += ["--min-np", str(topo.min_np), "--max-np", str(topo.max_np), "--host-discovery-script", script]
        if all(h.rsplit(":", 1)[0] in ("localhost", "127.0.0.1") for h in topo.hosts.split(",")):
            # Elastic horovodrun otherwise waits for two hosts to agree on a network
            # interface, forever when there is one host.
            cmd += ["--network-interface", "lo"]
    else:
        cmd += ["-H", topo.hosts]
    return cmd + [sys.executable, "-m", "trainer.job", *job_argv, "--result-file", str(result_file)]


def _discovery_script(hosts: str, workdir: Path) -> str:
    """Elastic Horovod asks a script which hosts exist; without one given, the fixed list."""
    path = workdir / "discover_hosts.sh"
    lines = "\n".join(f"echo {h}" for h in hosts.split(","))
    path.write_text(f"#!/bin/sh\n{lines}\n")
    path.chmod(0o755)
    return str(path)


def launch(args, topo: Topology, *, echo=sys.stdout) -> dict:
    """Run the job; return rank 0's result, or raise the error it (or horovodrun) reported."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env[OUTCOME_IN_RESULT_FILE] = "1"  # a decided outcome is read from the file, not horovodrun's status
    with tempfile.TemporaryDirectory(prefix="tunegate-finetune-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = command(topo, to_argv(args), result_file, Path(tmp))
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              cwd=PROJECT_ROOT, bufsize=1) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                echo.write(line)
                echo.flush()
            returncode = proc.wait()
        result = json.loads(result_file.read_text()) if result_file.is_file() else None
    return outcome(result, f"horovodrun exited with status {returncode}")


def outcome(result: dict | None, failure: str) -> dict:
    """Rank 0's result if it published; else the error it reported, or :class:`JobFailed`
    saying ``failure`` (how the launcher saw the job end) when it reported nothing."""
    if result and result.get("status") == "published":
        return result  # the version exists; a rank failing after rank 0 published changes nothing
    if result and result.get("error"):
        raise error_from_result(result["error"], result.get("message", ""), result)
    raise JobFailed(f"{failure} and the job reported no outcome (a rank died or could not start; "
                    "see its output above); nothing was published")
