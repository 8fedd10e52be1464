"""What the latency histograms cost per request on the small-model path.

1. In process: ``VersionStats.record_success`` (the statistics hot path, histograms
   included) and the histograms' own share of it (three ``bisect`` + list increments),
   in ns per request.
2. Through a real server: ``tunegate serve`` (its own process) on a small MLP (64 -> 32
   relu -> 10), batch-1 binary requests from the official tritonclient.http, and the
   server's CPU per request (user + system from /proc, over the requests answered). The
   histograms' share is (1)'s ns over this.
3. With ``--baseline CHECKOUT`` (e.g. ``git worktree add /tmp/base <commit before the
   histograms>``): that checkout's gateway beside this one, rounds alternating, the CPU per
   request of both and the difference. On a busy machine the difference is noise well above
   the histograms' cost; (1)/(2) is the figure to trust, (3) the check that nothing else moved.

    .venv/bin/python bench/metrics_overhead.py [--requests 3000] [--rounds 3] [--baseline /tmp/base]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from bisect import bisect_left
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from protocols import cpu_seconds  # noqa: E402  (bench/protocols.py)
from serve import start_gateway  # noqa: E402  (bench/serve.py)


def hot_path(calls: int) -> tuple[float, float]:
    """(ns per record_success, ns of it spent on the histograms)."""
    from gateway.core import stats as s

    rng = np.random.default_rng(0)
    samples = [(int(t), s.Timing(int(t) // 4, 1_000, int(t) // 2, 1_000, 1)) for t in rng.integers(50_000, 5_000_000, 1024)]
    book = s.VersionStats()

    def record() -> float:
        started = time.perf_counter_ns()
        for i in range(calls):
            total, timing = samples[i & 1023]
            book.record_success(1, total, timing)
        return (time.perf_counter_ns() - started) / calls

    bounds, a, b, c = s._BOUNDS_NS, s._buckets(), s._buckets(), s._buckets()

    def histograms() -> float:  # the three lines record_success runs for them, alone
        started = time.perf_counter_ns()
        for i in range(calls):
            total, t = samples[i & 1023]
            a[bisect_left(bounds, total)] += 1
            b[bisect_left(bounds, t.queue_ns)] += 1
            c[bisect_left(bounds, t.input_ns + t.infer_ns + t.output_ns)] += 1
        return (time.perf_counter_ns() - started) / calls

    def loop_only() -> float:  # the loop and the sample fetch both timings above include
        started = time.perf_counter_ns()
        for i in range(calls):
            total, t = samples[i & 1023]
        return (time.perf_counter_ns() - started) / calls

    record(), histograms()  # warm
    empty = min(loop_only() for _ in range(5))
    return min(record() for _ in range(5)) - empty, min(histograms() for _ in range(5)) - empty


def small_repo(root: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    from model_repo import Repository, TensorSpec, make_config

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(64, 32)).astype(np.float32), "W1")
    w2 = numpy_helper.from_array(rng.normal(size=(32, 10)).astype(np.float32), "W2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W1"], ["H"]), helper.make_node("Relu", ["H"], ["R"]),
         helper.make_node("MatMul", ["R", "W2"], ["Y"])], "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 10])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    repo = Repository(root)
    with repo.staging("mlp") as staged:
        (staged / "model.onnx").write_bytes(model.SerializeToString())
        repo.publish("mlp", staged, config=make_config("mlp", [TensorSpec("X", "FP32", (64,))],
                                                       [TensorSpec("Y", "FP32", (10,))], max_batch_size=8))


def cpu_per_request(url: str, pid: int, requests: int) -> float:
    """Server CPU (µs) per batch-1 binary infer, over ``requests`` sequential calls."""
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url)
    tensor = triton.InferInput("X", [1, 64], "FP32")
    tensor.set_data_from_numpy(np.random.default_rng(1).random((1, 64), np.float32), binary_data=True)
    output = triton.InferRequestedOutput("Y", binary_data=True)
    for _ in range(50):  # warm
        client.infer("mlp", [tensor], outputs=[output])
    before = cpu_seconds(pid)
    for _ in range(requests):
        client.infer("mlp", [tensor], outputs=[output])
    spent = cpu_seconds(pid) - before
    client.close()
    return spent / requests * 1e6


def main(argv: list[str] | None = None) -> int:
    from model_repo.triton import free_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help="in-process record_success calls")
    parser.add_argument("--requests", type=int, default=3000, help="requests per server round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout's gateway beside this one (A/B)")
    args = parser.parse_args(argv)

    record_ns, hist_ns = hot_path(args.calls)
    print(f"record_success: {record_ns:6.0f} ns/request, of which histograms {hist_ns:5.0f} ns")
    with tempfile.TemporaryDirectory(prefix="tunegate-metrics-") as work, contextlib.ExitStack() as stack:
        small_repo(Path(work))
        servers = [("tunegate", ROOT)] + ([("tunegate@base", args.baseline.resolve())] if args.baseline else [])
        running = []
        for label, source in servers:
            port = free_port()
            process = start_gateway(Path(work), port, 1, None, source=source)
            stack.callback(process.wait, 60)
            stack.callback(process.terminate)
            running.append((label, f"127.0.0.1:{port}", process.pid))
        results: dict[str, list[float]] = {label: [] for label, _, _ in running}
        for _ in range(args.rounds):  # alternating, so a drift in the machine's speed hits both
            for label, url, pid in running:
                results[label].append(cpu_per_request(url, pid, args.requests))
        medians = {label: float(np.median(v)) for label, v in results.items()}
        for label, value in medians.items():
            print(f"{label:<14} server CPU {value:7.1f} us/request  (rounds: "
                  + ", ".join(f"{v:.1f}" for v in results[label]) + ")")
        print(f"histograms' share of server CPU per request: {hist_ns / 10 / medians['tunegate']:.3f}% "
              f"({hist_ns:.0f} ns of {medians['tunegate']:.1f} us)")
        if args.baseline:
            base = medians["tunegate@base"]
            print(f"A/B: tunegate vs base {100 * (medians['tunegate'] - base) / base:+.1f}% server CPU per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
