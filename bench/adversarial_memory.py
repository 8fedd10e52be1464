"""Peak memory of a gateway under an adversarial burst (issue: "memory a request can claim").

Starts ``tunegate serve`` (from ``--source``, default this checkout) on a small repository,
then sends bursts that each try to make a small request claim a lot of memory, and prints
the server's resident memory before and its peak (VmHWM) after each, with the statuses:

- ``bytes-claim``: binary BYTES inputs claiming 2^26 elements with 4 bytes of data;
- ``json-max``: JSON bodies near the body limit (64 MiB), ``--concurrency`` at once (the
  decode budget's case);
- ``deep-json``: 5000-deep nested arrays.

    .venv/bin/python bench/adversarial_memory.py [--source DIR] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_repo import Repository  # noqa: E402
from model_repo.triton import free_port  # noqa: E402
from tests.gateway import models  # noqa: E402


def _proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _bursts(body_limit: int) -> dict[str, tuple[str, bytes, dict[str, str]]]:
    claim = json.dumps({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1 << 26],
                                    "parameters": {"binary_data_size": 4}}]}).encode()
    n = (body_limit - 200) // 6  # "0.125," is 6 bytes
    big = ('{"inputs":[{"name":"X","datatype":"FP32","shape":[%d,4],"data":[' % (n // 4)
           + ",".join(["0.125"] * (n // 4 * 4))
           + ']}],"outputs":[{"name":"OUT","parameters":{"binary_data":true}}]}').encode()
    deep = b'{"inputs":' + b"[" * 5000 + b"]" * 5000 + b"}"
    return {
        "bytes-claim": ("/v2/models/upper/infer", claim + b"\0\0\0\0",
                        {"Inference-Header-Content-Length": str(len(claim))}),
        "json-max": ("/v2/models/wide/infer", big, {"Content-Type": "application/json"}),
        "deep-json": ("/v2/models/upper/infer", deep, {"Content-Type": "application/json"}),
    }


def _send(port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except (ConnectionError, http.client.HTTPException):
        return -1
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout whose gateway to run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64, help="requests per burst")
    args = parser.parse_args()
    body_limit = 64 << 20
    with tempfile.TemporaryDirectory() as tmp:
        repo = Repository(Path(tmp) / "repo")
        models.publish(repo, "upper", models.bytes_model(), models.bytes_config("upper"))
        models.publish(repo, "wide", models.mlp_fp32(), models.mlp_config("wide", max_batch_size=1 << 22))
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(args.source)}
        server = subprocess.Popen([sys.executable, "-m", "tunegate_cli", "serve", "--repo", str(repo.root),
                                   "--port", str(port), "--grpc-port", "0", "--log-level", "ERROR"], cwd=args.source, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_ready(port)
            print(f"gateway from {args.source}: {args.requests} requests per burst, {args.concurrency} at once")
            print(f"{'burst':<12} {'RSS before MiB':>15} {'peak RSS MiB':>13}  statuses")
            for name, (path, body, headers) in _bursts(body_limit).items():
                before = _proc_kib(server.pid, "VmRSS") // 1024
                count = args.concurrency if name == "json-max" else args.requests  # 64 MiB each
                with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
                    statuses = collections.Counter(pool.map(lambda _: _send(port, path, body, headers),
                                                            range(count)))
                peak = _proc_kib(server.pid, "VmHWM") // 1024
                print(f"{name:<12} {before:>15} {peak:>13}  {dict(sorted(statuses.items()))}")
        finally:
            server.terminate()
            server.wait(30)
    return 0


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/v2/health/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the gateway did not become ready")


if __name__ == "__main__":
    sys.exit(main())
