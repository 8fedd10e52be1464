"""Server CPU per request with tracing off, against the same gateway from another checkout
(the commit before tracing), on the small-model path.

Two ``tunegate serve`` processes (this checkout, and ``--baseline``, e.g. a git worktree of
an older commit) serve the same tiny repository (a 4-feature MLP, no batching delay); one
HTTP client drives each in turn, round after round, and the server process's CPU time
(user + system, from /proc) is divided by the requests it answered. Prints CPU µs per
request for each and the ratio (median over rounds). ``--on`` adds a third gateway from this
checkout with tracing on (every request sampled, exported to a local OTLP sink).

    git worktree add /tmp/tunegate-base 1727e82   # the commit before tracing
    .venv/bin/python bench/tracing_overhead.py --baseline /tmp/tunegate-base [--rounds 5] [--requests 3000] [--on]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))


def build_repository(root: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    from model_repo import Repository, TensorSpec, make_config
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "mlp",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    config = make_config("mlp", [TensorSpec("X", "FP32", (4,))], [TensorSpec("Y", "FP32", (3,))], max_batch_size=8)
    repo = Repository(root)
    with repo.staging("mlp") as staged:
        (staged / "model.onnx").write_bytes(model.SerializeToString())
        repo.publish("mlp", staged, config=config)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(url: str, pid: int, requests: int) -> float:
    """CPU µs of the server per request over ``requests`` sequential binary infers."""
    import tritonclient.http as httpclient
    with contextlib.closing(httpclient.InferenceServerClient(url)) as client:
        x = httpclient.InferInput("X", [1, 4], "FP32")
        x.set_data_from_numpy(np.ones((1, 4), np.float32), binary_data=True)
        for _ in range(200):  # warm
            client.infer("mlp", [x])
        before = cpu_seconds(pid)
        for _ in range(requests):
            client.infer("mlp", [x])
        return (cpu_seconds(pid) - before) / requests * 1e6


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def main() -> int:
    from model_repo.triton import free_port
    from serve import start_gateway

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout (the commit before)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=3000, help="per gateway per round")
    parser.add_argument("--on", action="store_true", help="also a gateway with tracing on (every request)")
    args = parser.parse_args()
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        build_repository(repo)
        gateways = {"baseline": start_gateway(repo, free_port(), 1, None, source=args.baseline.resolve()),
                    "tracing off": start_gateway(repo, free_port(), 1, None)}
        if args.on:
            os.environ["TUNEGATE_TRACING__ENDPOINT"] = f"http://127.0.0.1:{sink.server_address[1]}/v1/traces"
            gateways["tracing on"] = start_gateway(repo, free_port(), 1, None)
            del os.environ["TUNEGATE_TRACING__ENDPOINT"]
        ports = {name: p.args[p.args.index("--port") + 1] for name, p in gateways.items()}
        try:
            results: dict[str, list[float]] = {name: [] for name in gateways}
            for _ in range(args.rounds):
                for name, process in gateways.items():
                    results[name].append(drive(f"127.0.0.1:{ports[name]}", process.pid, args.requests))
        finally:
            for process in gateways.values():
                process.terminate()
                process.wait(30)
            sink.shutdown()
    base = statistics.median(results["baseline"])
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:>12}: {median:7.1f} CPU µs/request (rounds: {', '.join(f'{v:.1f}' for v in values)})"
              f"  {100 * (median / base - 1):+5.1f}% vs baseline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
