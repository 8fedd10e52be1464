"""Per-request cost over HTTP, through a C load generator (Debian's ``wrk``), peers side by side.

Servers, one at a time, each on the same models and bodies:
  floor         bench/floor_server.py: bare aiohttp, reads the body, answers a fixed reply of
                the model's answer size (what any Python server on this stack pays);
  tunegate      ``tunegate serve`` as a user runs it (validation, stats, metrics, loop hooks);
  tritonserver  the nvidia-pytriton wheel's binary (C++ front end; its Python backend runs
                the same model.onnx on onnxruntime).
Bodies: ``binary`` (Triton's binary tensor extension) and ``json``. wrk posts one fixed
batch-1 body per request from a Lua script, at each concurrency, for ``--seconds``. For
every row: throughput, p50/p99 (wrk's), and the server's CPU per request (user + system of
its process tree from /proc, over the requests wrk counted). ``--pin`` puts the server on
the first CPU and wrk on the others (as a client on another host would be). Ratios are to
tritonserver's row (throughput, CPU per request) and to the floor's (CPU per request).

    apt-get install wrk
    .venv/bin/python bench/wrk_peers.py [--models mlp] [--bodies binary,json]
                                        [--concurrency 1,8,32,64] [--seconds 5] [--pin]
                                        [--baseline /tmp/base]  (another checkout, e.g. a git worktree)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from protocols import cpu_seconds, process_stats  # noqa: E402  (bench/protocols.py)
from serve import bench_repository, request_sample, start_gateway, wait_ready  # noqa: E402

LUA = """
wrk.method = "POST"
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "{content_type}"
{extra}
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT %d %d %d %f %f\\n", summary.requests, summary.duration, errors,
    latency:percentile(50), latency:percentile(99)))
end
"""


def bodies(repo, name: str, work: Path) -> dict[str, tuple[Path, str, str]]:
    """Per body kind: (body file, content type, extra Lua header lines)."""
    sample, types = request_sample(repo, name)
    out = {}
    doc = {"inputs": [{"name": k, "datatype": types[k], "shape": list(v.shape), "data": v.ravel().tolist()}
                      for k, v in sample.items()]}
    path = work / f"{name}.json"
    path.write_bytes(json.dumps(doc).encode())
    out["json"] = (path, "application/json", "")
    header = json.dumps({"inputs": [{"name": k, "datatype": types[k], "shape": list(v.shape),
                                     "parameters": {"binary_data_size": v.nbytes}} for k, v in sample.items()],
                         "parameters": {"binary_data_output": True}}).encode()
    path = work / f"{name}.bin"
    path.write_bytes(header + b"".join(np.ascontiguousarray(v).tobytes() for v in sample.values()))
    out["binary"] = (path, "application/octet-stream",
                     f'wrk.headers["Inference-Header-Content-Length"] = "{len(header)}"')
    return out


def wrk(url: str, model: str, body: tuple[Path, str, str], concurrency: int, seconds: float,
        cpus: set[int] | None, work: Path) -> tuple[int, float, int, float, float]:
    """(requests, seconds, errors, p50 ms, p99 ms) of one wrk run."""
    script = work / "post.lua"
    path, content_type, extra = body
    script.write_text(LUA.format(body=path, content_type=content_type, extra=extra))
    threads = max(1, min(concurrency, len(cpus) if cpus else 1))
    command = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{max(1, round(seconds))}s", "-s", str(script),
               f"http://{url}/v2/models/{model}/infer"]
    if cpus:
        command = ["taskset", "-c", ",".join(map(str, sorted(cpus)))] + command
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    fields = re.search(r"RESULT (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)", out)
    if fields is None:
        raise SystemExit(f"wrk printed no result:\n{out}")
    requests, micros, errors, p50, p99 = fields.groups()
    return int(requests), int(micros) / 1e6, int(errors), float(p50) / 1000, float(p99) / 1000


def pin_tree(pid: int, cpus: set[int], group: bool) -> None:
    """Every thread of ``pid`` (or of its process group) on ``cpus``."""
    for fields in process_stats(pid, group):
        for task in Path(f"/proc/{fields[0]}/task").glob("*"):
            with contextlib.suppress(OSError):  # a thread gone meanwhile
                os.sched_setaffinity(int(task.name), cpus)


def reply_of(url: str, model: str, body: tuple[Path, str, str], work: Path) -> tuple[Path, int | None]:
    """The gateway's real answer to ``body``, saved for the floor to send back."""
    import urllib.request

    path, content_type, extra = body
    headers = {"Content-Type": content_type}
    match = re.search(r'"(\d+)"', extra)
    if match:
        headers["Inference-Header-Content-Length"] = match.group(1)
    request = urllib.request.Request(f"http://{url}/v2/models/{model}/infer", data=path.read_bytes(),
                                     headers=headers)
    with urllib.request.urlopen(request) as answer:
        data, length = answer.read(), answer.headers.get("Inference-Header-Content-Length")
    reply = work / f"{path.name}.reply"
    reply.write_bytes(data)
    return reply, int(length) if length else None


@contextlib.contextmanager
def floor(reply: Path, header_length: int | None, cpus: set[int] | None):
    from model_repo.triton import free_port

    port = free_port()
    command = [sys.executable, str(ROOT / "bench/floor_server.py"), "--port", str(port), "--reply", str(reply)]
    if header_length:
        command += ["--header-length", str(header_length)]
    process = subprocess.Popen(command, preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    try:
        wait_ready(f"127.0.0.1:{port}", process, "floor server")
        yield f"127.0.0.1:{port}", process.pid, False
    finally:
        process.terminate()
        process.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=96, help="MobileNetV2 input height/width")
    parser.add_argument("--delay-us", type=int, default=2000)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--models", default="mlp")
    parser.add_argument("--bodies", default="binary,json")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--pin", action="store_true", help="server on the first CPU, wrk on the rest")
    parser.add_argument("--repo", type=Path, help="reuse a repository (converted models are cached there)")
    parser.add_argument("--baseline", type=Path, help="also tunegate from this checkout (row tunegate@base)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("no wrk: apt-get install wrk")

    from model_repo import Repository
    from model_repo.triton import TritonServer, find_tritonserver, free_port, write_python_view

    work, repo_dir, names = bench_repository(args.repo, "tunegate-wrk-", args.size, args.models, args.delay_us,
                                             args.instances)
    repo = Repository(repo_dir)
    write_python_view(repo, work / "view", names)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus, client_cpus = ({cpus[0]}, set(cpus[1:])) if args.pin else (None, None)
    print(f"# {len(cpus)} cores{', pinned: server on CPU ' + str(cpus[0]) if args.pin else ', unpinned'}; "
          f"wrk, batch 1, {args.seconds:g} s per row; delay {args.delay_us} us; instances {args.instances}")
    print(f"{'model':<13}{'body':<7}{'c':>3}  {'server':<13}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'cpu ms/req':>11}{'tput/tr':>8}{'cpu/tr':>7}{'cpu/floor':>10}")
    with contextlib.ExitStack() as stack:
        port = free_port()
        gateway = start_gateway(repo_dir, port, 0, None, cpus=server_cpus)
        stack.callback(gateway.wait, 60)
        stack.callback(gateway.terminate)
        tunegates = [("tunegate", f"127.0.0.1:{port}", gateway.pid, False)]
        if args.baseline:
            base_port = free_port()
            baseline = start_gateway(repo_dir, base_port, 0, None, cpus=server_cpus, source=args.baseline.resolve())
            stack.callback(baseline.wait, 60)
            stack.callback(baseline.terminate)
            tunegates.append(("tunegate@base", f"127.0.0.1:{base_port}", baseline.pid, False))
        triton = stack.enter_context(TritonServer(find_tritonserver(), work / "view"))
        if server_cpus:
            pin_tree(triton.process.pid, server_cpus, group=True)
        for name in names:
            for kind, body in bodies(repo, name, work).items():
                if kind not in args.bodies.split(","):
                    continue
                reply, header_length = reply_of(f"127.0.0.1:{port}", name, body, work)
                with floor(reply, header_length, server_cpus) as floor_server:
                    servers = [("floor", *floor_server), *tunegates,
                               ("tritonserver", triton.url, triton.process.pid, True)]
                    for concurrency in map(int, args.concurrency.split(",")):
                        rows = {}
                        for label, url, pid, group in servers:
                            before = cpu_seconds(pid, group)
                            requests, seconds, errors, p50, p99 = wrk(url, name, body, concurrency, args.seconds,
                                                                      client_cpus, work)
                            cpu = 1000 * (cpu_seconds(pid, group) - before) / max(requests, 1)
                            rows[label] = (requests / seconds, p50, p99, cpu, errors)
                            time.sleep(0.5)
                        tr, fl = rows["tritonserver"], rows["floor"]
                        for label, (tput, p50, p99, cpu, errors) in rows.items():
                            flag = f"  ({errors} errors)" if errors else ""
                            print(f"{name:<13}{kind:<7}{concurrency:>3}  {label:<13}{tput:>9.0f}{p50:>8.2f}{p99:>8.2f}"
                                  f"{cpu:>11.3f}{tput / tr[0]:>7.2f}x{cpu / tr[3]:>6.2f}x{cpu / fl[3]:>9.2f}x{flag}",
                                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
