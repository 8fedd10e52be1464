"""Gateway throughput beside in-process onnxruntime, one run, same machine.

Models: the chapter's MLP (100 -> 64 relu -> 10 softmax) and MobileNetV2 (weights=None,
alpha 1.0, 1000 classes) at ``--size`` (default 96x96x3), converted and published with
converters.publish_keras_model. The gateway runs as its own process (``tunegate serve``);
clients are threads with the official tritonclient.http, one request of batch 1 each, binary
tensors, at concurrency 1, 8, 32, 64. In-process: the same session options as the gateway
(gateway.runtime.session_options on the same config.pbtxt) and as many threads calling
session.run as the model has instances, at batch 1 and at each batch size up to 64 (the
best is the reference). Prints throughput (samples/s), p50 and p99 latency (ms) and the
ratio to in-process throughput.

On a small machine the Python client's own CPU is a large share (about 0.3 ms per request
here): ``--pin`` keeps it off the server's CPUs, as a client on another host would be, and
the reference gets the server's CPUs only. This machine's speed also drifts between runs;
``--rounds`` repeats everything and reports medians.

    .venv/bin/python bench/serve.py [--seconds 5] [--size 96] [--delay-us 2000] [--instances 1]
                                    [--threads 0] [--pin] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build_models(repo_dir: Path, size: int) -> None:
    """Convert with TensorFlow in a child process, so the measuring processes never load it."""
    code = f"""
import keras
from converters import publish_keras_model
from converters.examples import basic_mlp
from model_repo import Repository
repo = Repository({str(repo_dir)!r})
if not repo.has_model("mlp"):
    publish_keras_model(basic_mlp(), repo, "mlp", max_batch_size=64)
if not repo.has_model("mobilenet_v2"):
    model = keras.applications.MobileNetV2(input_shape=({size}, {size}, 3), weights=None)
    publish_keras_model(model, repo, "mobilenet_v2", max_batch_size=64, atol=1e-3)
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"})


# onnxruntime parameters per model, in config.pbtxt under Triton's keys (so both servers of
# bench/peer.py run them alike). The MLP is too small for intra-op parallelism: a second
# thread and spinning only burn the CPU that the HTTP side needs (measured: server CPU per
# request 0.50 ms with the defaults, 0.25 ms with these).
MODEL_PARAMETERS = {"mlp": {"intra_op_thread_count": "1", "session.intra_op.allow_spinning": "0"}}


def tune_config(repo_dir: Path, name: str, delay_us: int, instances: int) -> None:
    """An operator's edit of config.pbtxt: dynamic batching with a short delay, instances,
    and the model's onnxruntime parameters."""
    from model_repo import Repository

    repo = Repository(repo_dir)
    config = repo.read_config(name)
    config.dynamic_batching.max_queue_delay_microseconds = delay_us
    del config.dynamic_batching.preferred_batch_size[:]
    del config.instance_group[:]
    group = config.instance_group.add()
    group.count = instances
    config.parameters.clear()
    for key, value in MODEL_PARAMETERS.get(name, {}).items():
        config.parameters[key].string_value = value
    repo.write_config(name, config)


def bench_repository(repo_dir: Path | None, prefix: str, size: int, models: str, delay_us: int,
                     instances: int) -> tuple[Path, Path, list[str]]:
    """(a scratch folder, the repository, the model names) with the models converted and their
    config.pbtxt tuned; ``repo_dir`` reuses a repository (converted models are cached there)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    repo_dir = repo_dir or work / "repo"
    repo_dir.mkdir(parents=True, exist_ok=True)
    build_models(repo_dir, size)
    names = models.split(",")
    for name in names:
        tune_config(repo_dir, name, delay_us, instances)
    return work, repo_dir, names


def request_sample(repo, name: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A batch-1 request for ``name`` (seeded random inputs) and its inputs' v2 datatypes."""
    from model_repo import datatypes

    config = repo.read_config(name)
    rng = np.random.default_rng(0)
    sample = {t.name: rng.random((1, *t.dims)).astype(datatypes.BY_CONFIG[t.data_type].numpy) for t in config.input}
    return sample, {t.name: datatypes.BY_CONFIG[t.data_type].v2 for t in config.input}


def percentiles(latencies: list[float]) -> tuple[float, float]:
    values = np.array(latencies) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def in_process(path: Path, options, sample: dict[str, np.ndarray], batch: int, callers: int, seconds: float):
    """``callers`` threads running one session at once, as the gateway's instances do."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {k: np.repeat(v, batch, axis=0) for k, v in sample.items()}
    for _ in range(3):
        session.run(None, feeds)
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    def caller():
        while (now := time.perf_counter()) < end:
            session.run(None, feeds)
            latencies.append(time.perf_counter() - now)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return batch * len(latencies) / (time.perf_counter() - began), *percentiles(latencies)


def through_gateway(url: str, model: str, sample: dict[str, np.ndarray], datatypes: dict[str, str],
                    concurrency: int, seconds: float):
    import tritonclient.http as triton

    latencies: list[float] = []
    lock = threading.Lock()
    start_barrier = threading.Barrier(concurrency + 1)
    stop = threading.Event()
    errors: list[Exception] = []

    def client_loop():
        client = triton.InferenceServerClient(url, connection_timeout=120, network_timeout=120)
        inputs = []
        for name, array in sample.items():
            tensor = triton.InferInput(name, list(array.shape), datatypes[name])
            tensor.set_data_from_numpy(array, binary_data=True)
            inputs.append(tensor)
        mine = []
        client.infer(model, inputs)  # warm the connection
        start_barrier.wait()
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                client.infer(model, inputs)
            except Exception as exc:
                errors.append(exc)
                continue
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)
        client.close()

    workers = [threading.Thread(target=client_loop) for _ in range(concurrency)]
    for w in workers:
        w.start()
    start_barrier.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    if errors:
        print(f"  {len(errors)} errors, first: {errors[0]}")
    return len(latencies) / elapsed, *percentiles(latencies)


def stats(url: str, model: str) -> tuple[int, int]:
    import tritonclient.http as triton

    s = triton.InferenceServerClient(url).get_inference_statistics(model)["model_stats"][0]
    return s["inference_count"], s["execution_count"]


def wait_ready(url: str, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 300
    while True:
        try:
            if urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=2).status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit(f"{what} did not become ready")
        time.sleep(0.2)


def start_gateway(repo_dir: Path, port: int, threads: int, triton_url: str | None,
                  cpus: set[int] | None = None, grpc_port: int = 0, source: Path = ROOT) -> subprocess.Popen:
    """``tunegate serve`` from the checkout ``source`` (this one by default; another one, e.g.
    ``git worktree add /tmp/base <commit>``, to compare two commits side by side in one run)."""
    env = {**os.environ, "TUNEGATE_RUNTIME__PROVIDER": "cpu", "TUNEGATE_RUNTIME__INTRA_OP_THREADS": str(threads),
           "TUNEGATE_ACCESS_LOG": "false", "TUNEGATE_LOG_LEVEL": "WARNING", "TUNEGATE_MODEL_CONTROL": "none"}
    if triton_url:
        env["TUNEGATE_RUNTIME__KIND"] = "triton"
        env["TUNEGATE_RUNTIME__TRITON"] = json.dumps({"endpoints": [triton_url]})
    # The script's folder comes first on sys.path: ``source``'s packages are the ones imported.
    process = subprocess.Popen([sys.executable, str(source / "tunegate_cli.py"), "serve", "--repo", str(repo_dir),
                                "--port", str(port), "--grpc-port", str(grpc_port)], env=env, cwd=source,
                               preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    wait_ready(f"127.0.0.1:{port}", process, f"gateway on {port}")
    return process


def split_cpus(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """With ``pin``: the server (and the in-process reference) on the first half of this
    process's CPUs, the clients on the rest, as if the clients ran on another host."""
    if not pin:
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--size", type=int, default=96, help="MobileNetV2 input height/width")
    parser.add_argument("--delay-us", type=int, default=2000, help="max_queue_delay_microseconds")
    parser.add_argument("--instances", type=int, default=1, help="instance_group count (concurrent runs)")
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads (0: the gateway's default; with --pin, the pinned CPUs per instance)")
    parser.add_argument("--pin", action="store_true",
                        help="server and in-process reference on half the CPUs, clients on the other half")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything; report medians")
    parser.add_argument("--repo", type=Path, help="reuse a repository (converted models are cached there)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--models", default="mlp,mobilenet_v2")
    args = parser.parse_args()

    repo_dir = args.repo or Path(tempfile.mkdtemp(prefix="tunegate-bench-"))
    repo_dir.mkdir(parents=True, exist_ok=True)
    build_models(repo_dir, args.size)
    from gateway.runtime.session_options import session_options
    from gateway.settings import RuntimeSettings
    from model_repo import Repository

    repo = Repository(repo_dir)
    names = args.models.split(",")
    for name in names:
        tune_config(repo_dir, name, args.delay_us, args.instances)
    server_cpus, client_cpus = split_cpus(args.pin)
    threads = args.threads or (max(1, len(server_cpus) // args.instances) if server_cpus else 0)
    settings = RuntimeSettings(provider="cpu", intra_op_threads=threads)

    server = start_gateway(repo_dir, args.port, threads, None, server_cpus)
    url = f"127.0.0.1:{args.port}"
    try:
        print(f"# {os.cpu_count()} cores; MobileNetV2 input {args.size}x{args.size}x3; delay {args.delay_us} us; "
              f"instances {args.instances}; intra-op threads {threads or 'default'}; {args.seconds:g} s each; "
              f"median of {args.rounds} round(s); "
              + (f"server on CPUs {sorted(server_cpus)}, clients on {sorted(client_cpus)}" if args.pin
                 else "server and clients share the CPUs"))
        print(f"{'model':<14}{'mode':<30}{'samples/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'vs best':>9}")
        for name in names:
            sample, types = request_sample(repo, name)
            version = repo.resolve(name)
            path = repo.model_path(name, version)
            # The reference runs the session exactly as the gateway does: same options, and
            # as many concurrent runs as the model has instances.
            options = session_options(settings, repo.read_config(name), args.instances, name)
            results: dict[str, list[tuple[float, float, float]]] = {}
            for _ in range(args.rounds):
                if server_cpus:
                    os.sched_setaffinity(0, server_cpus)
                for batch in (1, 8, 16, 32, 64):
                    results.setdefault(f"b={batch}", []).append(
                        in_process(path, options, sample, batch, args.instances, args.seconds / 2))
                if client_cpus:
                    os.sched_setaffinity(0, client_cpus)
                for concurrency in (1, 8, 32, 64):
                    before = stats(url, name)
                    measured = through_gateway(url, name, sample, types, concurrency, args.seconds)
                    after = stats(url, name)
                    batch = (after[0] - before[0]) / max(1, after[1] - before[1])
                    results.setdefault(f"c={concurrency}", []).append((*measured, batch))
            median = {key: tuple(float(np.median(column)) for column in zip(*runs)) for key, runs in results.items()}
            best = max((key for key in median if key.startswith("b=")), key=lambda key: median[key][0])
            rows = [("in-process batch 1", *median["b=1"]), (f"in-process best ({best})", *median[best])]
            rows += [(f"gateway {key} (avg b={median[key][3]:.1f})", *median[key][:3])
                     for key in median if key.startswith("c=")]
            for mode, tput, p50, p99 in rows:
                print(f"{name:<14}{mode:<30}{tput:>11.1f}{p50:>9.2f}{p99:>9.2f}{tput / median[best][0]:>8.2f}x")
            sys.stdout.flush()
    finally:
        server.terminate()
        server.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
