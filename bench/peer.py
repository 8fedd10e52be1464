"""The gateway beside a real tritonserver, same ONNX files, one run, same machine.

Models: the chapter's MLP (100 -> 64 relu -> 10 softmax) and MobileNetV2 (weights=None) at
``--size`` (default 96x96x3), converted with converters.publish_keras_model. Served by
  (a) the gateway on onnxruntime,
  (b) tritonserver (the nvidia-pytriton wheel's binary; its Python backend runs the same
      model.onnx on onnxruntime, see model_repo/triton.py: it has no ONNX Runtime backend),
  (c) the gateway forwarding to that tritonserver (runtime kind "triton").
Both servers get the same config.pbtxt: batching (dynamic batching, ``--delay-us``),
``--instances``, and the onnxruntime parameters of serve.MODEL_PARAMETERS (the Python-backend
model reads the same keys as the gateway). One client: tritonclient.http threads, batch 1 per request, binary
tensors, at concurrency 1, 8, 32, 64. Prints samples/s, p50 and p99 (ms), and gateway /
Triton ratios of throughput and of p99.

    .venv/bin/python bench/peer.py [--seconds 5] [--size 96] [--delay-us 2000] [--instances 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve import (  # noqa: E402  (bench/serve.py)
    bench_repository,
    request_sample,
    start_gateway,
    through_gateway,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--size", type=int, default=96, help="MobileNetV2 input height/width")
    parser.add_argument("--delay-us", type=int, default=2000, help="max_queue_delay_microseconds (both servers)")
    parser.add_argument("--instances", type=int, default=1, help="instance_group count (both servers)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: one per core)")
    parser.add_argument("--repo", type=Path, help="reuse a repository (converted models are cached there)")
    parser.add_argument("--models", default="mlp,mobilenet_v2")
    parser.add_argument("--concurrency", default="1,8,32,64")
    args = parser.parse_args()

    from model_repo import Repository
    from model_repo.triton import TritonServer, find_tritonserver, free_port, write_python_view

    install = find_tritonserver()
    if install is None:
        raise SystemExit("no tritonserver: pip install --no-deps nvidia-pytriton==0.7.0")
    work, repo_dir, names = bench_repository(args.repo, "tunegate-peer-", args.size, args.models, args.delay_us,
                                             args.instances)
    repo = Repository(repo_dir)
    write_python_view(repo, work / "view", names, intra_op_threads=args.threads)

    processes: list[subprocess.Popen] = []
    with TritonServer(install, work / "view") as tritonserver:
        try:
            local_port, forward_port = free_port(), free_port()
            processes.append(start_gateway(repo_dir, local_port, args.threads, None))
            processes.append(start_gateway(repo_dir, forward_port, args.threads, tritonserver.url))
            targets = {"(a) gateway/onnxruntime": f"127.0.0.1:{local_port}",
                       "(b) tritonserver": tritonserver.url,
                       "(c) gateway->triton": f"127.0.0.1:{forward_port}"}
            print(f"# {os.cpu_count()} cores; MobileNetV2 {args.size}x{args.size}x3; delay {args.delay_us} us; "
                  f"instances {args.instances}; intra-op threads {args.threads or 'default'}; "
                  f"{args.seconds:g} s each; tritonclient.http, binary tensors, batch 1 per request")
            print(f"{'model':<13}{'c':>3}  {'server':<24}{'samples/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
                  f"{'tput/b':>8}{'p99/b':>7}")
            for name in names:
                sample, types = request_sample(repo, name)
                for concurrency in map(int, args.concurrency.split(",")):
                    rows = {label: through_gateway(url, name, sample, types, concurrency, args.seconds)
                            for label, url in targets.items()}
                    peer = rows["(b) tritonserver"]
                    for label, (tput, p50, p99) in rows.items():
                        print(f"{name:<13}{concurrency:>3}  {label:<24}{tput:>10.1f}{p50:>9.2f}{p99:>9.2f}"
                              f"{tput / peer[0]:>7.2f}x{p99 / peer[2]:>6.2f}x")
                    sys.stdout.flush()
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
