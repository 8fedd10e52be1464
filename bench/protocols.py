"""HTTP and gRPC side by side, through a C++ load generator: perf_analyzer.

The same models as bench/serve.py (the chapter's MLP, MobileNetV2 at ``--size``), served by
``tunegate serve`` with both front ends, and (``--peer``) by a real tritonserver (the
nvidia-pytriton wheel's binary; its Python backend runs the same model.onnx on onnxruntime)
over both of its protocols. perf_analyzer (``make perf-analyzer``) drives each one at each
concurrency with batch-1 requests of random data; for every row the server's CPU time
(``/proc/<pid>/stat``, user + system) over the requests it answered in that run (its own
statistics extension) gives the CPU per request. Prints throughput, p50 and p99 (from
perf_analyzer's CSV), server CPU per request, and ratios to the gateway's HTTP row.

    make perf-analyzer
    .venv/bin/python bench/protocols.py [--models mlp] [--concurrency 1,8,32] [--seconds 3] [--peer] [--baseline /tmp/base]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve import bench_repository, start_gateway  # noqa: E402  (bench/serve.py)

PERF_ANALYZER = Path(os.environ.get("TUNEGATE_CACHE", Path.home() / ".cache/tunegate")) / "perf_analyzer/bin/perf_analyzer"
TICKS = os.sysconf("SC_CLK_TCK")


def process_stats(pid: int, group: bool = False) -> list[list[str]]:
    """The /proc stat fields (after the command name) of ``pid``, or with ``group`` of every
    process in its process group (tritonserver's Python-backend stubs are processes of their
    own); field 0 is the pid."""
    found = []
    for stat in (Path("/proc").glob("[0-9]*/stat") if group else [Path(f"/proc/{pid}/stat")]):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
        except (OSError, ValueError):  # gone meanwhile
            continue
        fields = [head.split(" ", 1)[0], *tail.split()]
        if not group or int(fields[3]) == pid:  # pgrp
            found.append(fields)
    return found


def cpu_seconds(pid: int, group: bool = False) -> float:
    """User + system CPU of ``pid`` (all its threads), or of its process group."""
    return sum(int(f[12]) + int(f[13]) for f in process_stats(pid, group)) / TICKS  # utime, stime


def answered(http_url: str, model: str) -> int:
    import tritonclient.http as triton

    stats = triton.InferenceServerClient(http_url).get_inference_statistics(model)["model_stats"]
    return sum(s["inference_stats"]["success"]["count"] for s in stats)


def run(protocol: str, url: str, http_url: str, model: str, concurrency: int, seconds: float,
        pid: int, group: bool) -> tuple[float, float, float, float]:
    """(infer/s, p50 ms, p99 ms, server CPU ms per request) of one perf_analyzer run."""
    with tempfile.NamedTemporaryFile(suffix=".csv") as report:
        cpu, count = cpu_seconds(pid, group), answered(http_url, model)
        result = subprocess.run(
            [str(PERF_ANALYZER), "-m", model, "-i", protocol, "-u", url, "--concurrency-range",
             f"{concurrency}:{concurrency}", "--measurement-interval", str(int(seconds * 1000)),
             "--stability-percentage", "50", "--max-trials", "4", "--percentile", "99", "-f", report.name],
            capture_output=True, text=True)
        cpu, count = cpu_seconds(pid, group) - cpu, answered(http_url, model) - count
        if result.returncode != 0:
            raise SystemExit(f"perf_analyzer failed on {protocol} {url}:\n{result.stdout[-2000:]}{result.stderr}")
        row = next(csv.DictReader(open(report.name)))
    return (float(row["Inferences/Second"]), float(row["p50 latency"]) / 1000, float(row["p99 latency"]) / 1000,
            1000 * cpu / max(count, 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="perf_analyzer measurement window")
    parser.add_argument("--size", type=int, default=96, help="MobileNetV2 input height/width")
    parser.add_argument("--delay-us", type=int, default=2000, help="max_queue_delay_microseconds")
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--models", default="mlp")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--repo", type=Path, help="reuse a repository (converted models are cached there)")
    parser.add_argument("--peer", action="store_true", help="also tritonserver, over both protocols")
    parser.add_argument("--baseline", type=Path, help="also tunegate from this checkout (server tunegate@base)")
    args = parser.parse_args()
    if not PERF_ANALYZER.exists():
        raise SystemExit(f"no {PERF_ANALYZER}: run make perf-analyzer")

    from model_repo import Repository
    from model_repo.triton import TritonServer, find_tritonserver, free_port, write_python_view

    work, repo_dir, names = bench_repository(args.repo, "tunegate-protocols-", args.size, args.models, args.delay_us,
                                             args.instances)
    http_port, grpc_port = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        gateway = start_gateway(repo_dir, http_port, 0, None, grpc_port=grpc_port)
        stack.callback(gateway.wait, 60)
        stack.callback(gateway.terminate)
        local = f"127.0.0.1:{http_port}"
        targets = [("tunegate", "http", local, local, gateway.pid, False),
                   ("tunegate", "grpc", f"127.0.0.1:{grpc_port}", local, gateway.pid, False)]
        if args.baseline:
            base_http, base_grpc = free_port(), free_port()
            baseline = start_gateway(repo_dir, base_http, 0, None, grpc_port=base_grpc, source=args.baseline.resolve())
            stack.callback(baseline.wait, 60)
            stack.callback(baseline.terminate)
            base_url = f"127.0.0.1:{base_http}"
            targets += [("tunegate@base", "http", base_url, base_url, baseline.pid, False),
                        ("tunegate@base", "grpc", f"127.0.0.1:{base_grpc}", base_url, baseline.pid, False)]
        if args.peer:
            write_python_view(Repository(repo_dir), work / "view", names)
            peer = stack.enter_context(TritonServer(find_tritonserver(), work / "view"))
            # started in a session of its own: its process group is its pid
            targets += [("tritonserver", "http", peer.url, peer.url, peer.process.pid, True),
                        ("tritonserver", "grpc", f"127.0.0.1:{peer.grpc_port}", peer.url, peer.process.pid, True)]
        print(f"# {os.cpu_count()} cores; perf_analyzer, batch 1, {args.seconds:g} s windows; delay "
              f"{args.delay_us} us; instances {args.instances}; ratios against tunegate http")
        print(f"{'model':<13}{'c':>3}  {'server':<13}{'proto':<6}{'infer/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
              f"{'cpu ms/req':>11}{'tput':>7}{'cpu':>7}")
        for name in names:
            for concurrency in map(int, args.concurrency.split(",")):
                base = None
                for server, protocol, url, http_url, pid, group in targets:
                    tput, p50, p99, cpu = run(protocol, url, http_url, name, concurrency, args.seconds, pid, group)
                    base = base or (tput, cpu)
                    print(f"{name:<13}{concurrency:>3}  {server:<13}{protocol:<6}{tput:>9.1f}{p50:>8.2f}{p99:>8.2f}"
                          f"{cpu:>11.3f}{tput / base[0]:>6.2f}x{cpu / base[1]:>6.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
