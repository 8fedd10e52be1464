"""Start one rank under a cluster launcher, without ssh or horovodrun.

``python -m trainer.cluster <job flags>`` is the command of every pod of the Helm chart's
fine-tune Job (an Indexed Job, one pod per rank). It does what ``horovodrun --gloo`` does
for a local rank, the way Horovod's Ray and Spark integrations start theirs: rank 0 runs
Horovod's Gloo rendezvous server (an HTTP key-value store) on a fixed port; every rank gets
``HOROVOD_RANK/SIZE/...`` and the rendezvous address in its environment and runs
``trainer.job`` in this process, whose ``hvd.init()`` meets the others through the server.

Environment (set by the chart; ``JOB_COMPLETION_INDEX`` by Kubernetes itself):

- ``JOB_COMPLETION_INDEX``: this pod's index, which is its rank (one rank per pod).
- ``TUNEGATE_WORLD_SIZE``: the number of ranks (the Job's completions).
- ``TUNEGATE_RENDEZVOUS_HOST``/``_PORT``: where rank 0's server listens
  (``<job>-0.<headless service>`` in the chart).
- ``HOROVOD_GLOO_IFACE``: the interface Gloo binds to (``eth0`` in a pod).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from .errors import EXIT_BAD_INPUT


def _int_env(env: dict[str, str], name: str) -> int:
    try:
        return int(env[name])
    except (KeyError, ValueError):
        raise SystemExit(f"trainer.cluster: {name} must be set to an integer "
                         f"(got {env.get(name)!r})") from None


def horovod_env(rank: int, size: int, addr: str, port: int) -> dict[str, str]:
    """What horovodrun would export for this rank (gloo_run.create_slot_env_vars and
    get_run_command), for one rank per host: local rank 0 of 1, cross rank = rank."""
    return {
        "HOROVOD_RANK": str(rank), "HOROVOD_SIZE": str(size),
        "HOROVOD_LOCAL_RANK": "0", "HOROVOD_LOCAL_SIZE": "1",
        "HOROVOD_CROSS_RANK": str(rank), "HOROVOD_CROSS_SIZE": str(size),
        # Names the rank's "local" rendezvous scope; it must match the server's plan.
        "HOROVOD_HOSTNAME": f"rank-{rank}",
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": addr, "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
        "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo",
    }


def start_rendezvous(size: int, port: int):
    """Horovod's rendezvous server on a fixed port (``RendezvousServer.start`` picks a
    random one, which the other pods could not know), initialised with the plan the ranks
    follow."""
    from horovod.runner.common.util.hosts import SlotInfo
    from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer
    from horovod.runner.util.threads import in_thread

    server = RendezvousHTTPServer(("", port), RendezvousHandler, 0)
    server.init([SlotInfo(hostname=f"rank-{r}", rank=r, local_rank=0, cross_rank=r, size=size,
                          local_size=1, cross_size=size) for r in range(size)])
    in_thread(target=server.serve_forever)
    return server


def wait_for(host: str, port: int, timeout: float) -> str:
    """Resolve ``host`` and wait until it accepts connections; return its address.

    Rank 0's pod may start after this one, and its DNS record appears only when it
    exists; Gloo itself would give up on the first refused connection."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            addr = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
            with socket.create_connection((addr, port), timeout=5):
                return addr
        except OSError as exc:
            last = exc
            time.sleep(1)
    raise SystemExit(f"trainer.cluster: rank 0's rendezvous server {host}:{port} did not answer "
                     f"within {timeout:.0f}s ({last})")


def main(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ if env is None else env
    rank = _int_env(env, "JOB_COMPLETION_INDEX")
    size = _int_env(env, "TUNEGATE_WORLD_SIZE")
    port = _int_env(env, "TUNEGATE_RENDEZVOUS_PORT")
    host = env.get("TUNEGATE_RENDEZVOUS_HOST", "")
    if not 0 <= rank < size or not host:
        print(f"trainer.cluster: rank {rank} of {size} with rendezvous host {host!r} is not a valid "
              "placement", file=sys.stderr)
        return EXIT_BAD_INPUT
    timeout = float(env.get("HOROVOD_GLOO_TIMEOUT_SECONDS", "300"))

    server = start_rendezvous(size, port) if rank == 0 else None
    addr = wait_for(host, port, timeout)
    os.environ.update(horovod_env(rank, size, addr, port))
    if rank == 0 and "--result-file" in argv:
        # The result lands beside the model on the shared volume; its folder may be new.
        Path(argv[argv.index("--result-file") + 1]).parent.mkdir(parents=True, exist_ok=True)
    from .job import main as job_main

    try:
        return job_main(argv)
    finally:
        if server is not None:
            server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
