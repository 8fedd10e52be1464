"""``tunegate serve --workers N``: throughput, latency and CPU per request as workers are added.

The same model and bodies as bench/wrk_peers.py, through wrk (a C load generator), unpinned
(the workers and wrk share the host's cores, as they would on a server with a local
client). One server at a time; for every worker count: throughput, p50/p99 (wrk's), and
the server's CPU per request (user + system of the supervisor and all its workers, from
/proc, over the requests wrk counted), with ratios to one worker.

    apt-get install wrk
    .venv/bin/python bench/workers.py [--workers 1,2] [--concurrency 64] [--seconds 10]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from protocols import cpu_seconds  # noqa: E402  (bench/protocols.py)
from serve import bench_repository  # noqa: E402
from wrk_peers import bodies, wrk  # noqa: E402


@contextlib.contextmanager
def gateway(repo_dir: Path, port: int, workers: int):
    env = {**os.environ, "TUNEGATE_RUNTIME__PROVIDER": "cpu", "TUNEGATE_RUNTIME__INTRA_OP_THREADS": "1",
           "TUNEGATE_LOG_LEVEL": "WARNING", "TUNEGATE_MODEL_CONTROL": "none", "TUNEGATE_WORKERS": str(workers)}
    # Its own session: the supervisor leads a process group holding every worker.
    process = subprocess.Popen([sys.executable, str(ROOT / "tunegate_cli.py"), "serve", "--repo", str(repo_dir),
                                "--port", str(port), "--grpc-port", "0"], env=env, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while sum(_ready(port) for _ in range(4 * workers)) < 4 * workers:  # new connections reach every worker
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"tunegate --workers {workers} did not become ready")
            time.sleep(0.3)
        yield process
    finally:
        process.terminate()
        process.wait(120)


def _ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status == 200
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--concurrency", default="64")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--models", default="mlp")
    parser.add_argument("--bodies", default="binary,json")
    parser.add_argument("--delay-us", type=int, default=2000)
    parser.add_argument("--repo", type=Path, help="reuse a repository (converted models are cached there)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("no wrk: apt-get install wrk")

    from model_repo import Repository
    from model_repo.triton import free_port

    work, repo_dir, names = bench_repository(args.repo, "tunegate-workers-", 96, args.models, args.delay_us, 1)
    repo = Repository(repo_dir)
    print(f"# {len(os.sched_getaffinity(0))} cores, unpinned; wrk, batch 1, {args.seconds:g} s per row; "
          f"delay {args.delay_us} us")
    print(f"{'model':<8}{'body':<7}{'c':>4}{'workers':>8}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'cpu ms/req':>11}"
          f"{'tput/1':>8}{'p99/1':>7}{'cpu/1':>7}")
    for name in names:
        for kind, body in bodies(repo, name, work).items():
            if kind not in args.bodies.split(","):
                continue
            for concurrency in map(int, args.concurrency.split(",")):
                first = None
                for count in map(int, args.workers.split(",")):
                    port = free_port()
                    with gateway(repo_dir, port, count) as process:
                        wrk(f"127.0.0.1:{port}", name, body, concurrency, 2, None, work)  # warm-up
                        before = cpu_seconds(process.pid, group=True)
                        requests, seconds, errors, p50, p99 = wrk(f"127.0.0.1:{port}", name, body, concurrency,
                                                                  args.seconds, None, work)
                        cpu = 1000 * (cpu_seconds(process.pid, group=True) - before) / max(requests, 1)
                    row = (requests / seconds, p99, cpu)
                    first = first or row
                    flag = f"  ({errors} errors)" if errors else ""
                    print(f"{name:<8}{kind:<7}{concurrency:>4}{count:>8}{row[0]:>9.0f}{p50:>8.2f}{p99:>8.2f}{cpu:>11.3f}"
                          f"{row[0] / first[0]:>7.2f}x{p99 / first[1]:>6.2f}x{cpu / first[2]:>6.2f}x{flag}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
