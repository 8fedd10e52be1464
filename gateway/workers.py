"""``tunegate serve --workers N``: N serving processes sharing the HTTP and gRPC ports.

One Python process serves from about one core (the event loop); N processes on one host
serve from N. Each worker is a whole gateway (its own sessions, batcher and front ends) on
the same ports with ``SO_REUSEPORT``, so the kernel spreads connections over them. Nothing
the loop decides lives in a worker's memory: which versions serve and the canary come from
the repository, its decisions from the one elected leader (``gateway.loop.leadership``),
so the workers route alike within one watcher poll. ``/metrics`` on any worker sums all of
them (``gateway.http.worker_peers``).

This module is the supervisor: it reserves the ports (bound, never listening, so it gets no
connections: a clash is told at once, and port 0 becomes one port every worker shares),
starts the workers (``spawn``: no state inherited from this process), restarts one that
dies, and on SIGINT or SIGTERM stops them all, giving each its exit timeout to drain.
"""

from __future__ import annotations

import logging
import multiprocessing
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from .settings import Settings
from .sockets import listen

log = logging.getLogger("tunegate.workers")

_RESTARTS_PER_MINUTE = 5


@dataclass(frozen=True)
class WorkerSlot:
    index: int
    count: int
    run_dir: str  # where the workers' metrics sockets are


def run_workers(settings: Settings, serve_worker: Callable[[Settings, WorkerSlot], None]) -> int:
    """Run ``serve_worker`` in ``settings.workers`` processes until SIGINT or SIGTERM."""
    reserved = [listen(settings.host, settings.port, reuse_port=True, listening=False)]
    if settings.grpc_port:
        reserved.append(listen(settings.host, settings.grpc_port, reuse_port=True, listening=False,
                               flag="--grpc-port"))
    ports = {"port": reserved[0].getsockname()[1],
             "grpc_port": reserved[1].getsockname()[1] if settings.grpc_port else 0}
    settings = settings.model_copy(update=ports)
    run_dir = tempfile.mkdtemp(prefix="tunegate-workers-")
    context = multiprocessing.get_context("spawn")
    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}

    def start(index: int):
        process = context.Process(target=serve_worker, args=(settings, WorkerSlot(index, settings.workers, run_dir)),
                                  name=f"tunegate-worker-{index}", daemon=False)
        process.start()
        return process

    workers = {i: start(i) for i in range(settings.workers)}
    log.info("%d serving workers on port %s (gRPC %s): pids %s", settings.workers, ports["port"],
             ports["grpc_port"] or "off", ", ".join(str(p.pid) for p in workers.values()))
    restarts: list[float] = []
    status = 0
    try:
        while not stopping:
            time.sleep(0.2)
            for index, process in list(workers.items()):
                if process.is_alive() or stopping:
                    continue
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < 60] + [now]
                if len(restarts) > _RESTARTS_PER_MINUTE:
                    log.error("workers keep exiting (%d restarts in a minute; the last exited with %s); "
                              "stopping", len(restarts) - 1, process.exitcode)
                    stopping, status = True, 1
                    break
                log.error("worker %d exited with %s; starting it again", index, process.exitcode)
                workers[index] = start(index)
    finally:
        _stop_all(list(workers.values()), settings.exit_timeout_seconds + 10)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in reserved:
            sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    return status


def _stop_all(processes: list, timeout: float) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()  # SIGTERM: the worker drains as a single server does
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            log.error("worker pid %s did not stop within %.0f s; killing it", process.pid, timeout)
            process.kill()
            process.join()
