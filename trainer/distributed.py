"""The few Horovod collectives the trainer uses, in forms that work with Keras 3 variables,
and the per-host settings Horovod and TensorFlow read at start-up.

``hvd.broadcast_variables`` and ``hvd.DistributedGradientTape`` call ``Variable.ref()``, which
Keras 3 variables lack (horovod#4290); broadcasting each variable's value and assigning it
back works for Keras and TensorFlow variables alike.

Every helper here is the identity on a one-rank job and issues no collective: with one rank
there is nobody to agree with, and each Horovod op still costs a trip through its
background thread (2–2.7 ms per step measured on a CNN), fp16 compression would round the
gradients for nothing.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

# Horovod's thread wakes every cycle to look for tensors to exchange. At its 1 ms default it
# took 0.20-0.25 of a core per rank on a 2-core host; on the batch-norm CNN (issue 18) np=2
# went from 452 to 492 samples/s at 10 ms. A longer cycle adds up to that much latency per
# allreduce, noticeable only when a step takes a few ms (bench/train.py shows both models).
DEFAULT_CYCLE_TIME_MS = 10.0
DEFAULT_FUSION_THRESHOLD_MB = 64  # Horovod's own: every gradient of the models measured fits one buffer


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_ranks(cores: int) -> int:
    """How many ranks ``tunegate finetune`` starts on one host when ``--np`` is not given.

    Measured on a 2-core host with the batch-norm CNN: one rank with both cores 481 samples/s,
    two one-thread ranks 452 (0.94x) at Horovod's 1 ms cycle and 492 (1.02x, within noise)
    at 10 ms, for twice the memory and two TensorFlow start-ups on the same cores. So one rank
    on hosts of up to 2 cores; above that one rank per core, Horovod's usual layout (not
    measured here: run bench/train.py on such a host to check it).
    """
    return 1 if cores <= 2 else cores


def configure_horovod(cycle_time_ms: float | None, fusion_threshold_mb: int | None) -> None:
    """Set Horovod's knobs; they are read from the environment by ``hvd.init()``, so call it first."""
    if cycle_time_ms is not None:
        os.environ["HOROVOD_CYCLE_TIME"] = f"{cycle_time_ms:g}"
    if fusion_threshold_mb is not None:
        os.environ["HOROVOD_FUSION_THRESHOLD"] = str(int(fusion_threshold_mb * (1 << 20)))


def configure_threads(hvd, override: int | None = None) -> int:
    """Give each rank an equal share of this host's cores (cores / local size).

    Must run before TensorFlow creates its runtime, i.e. before the first op."""
    import tensorflow as tf

    threads = override or max(1, usable_cores() // hvd.local_size())
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return threads


def broadcast_variables(hvd, variables, root_rank: int = 0) -> None:
    if hvd.size() == 1:
        return
    for var in variables:
        var.assign(hvd.broadcast(var.value if hasattr(var, "value") else var, root_rank))


def broadcast_object(hvd, obj, root_rank: int = 0):
    return obj if hvd.size() == 1 else hvd.broadcast_object(obj, root_rank=root_rank)


def gather_across_ranks(hvd, values: dict[str, float]) -> dict[str, list[float]]:
    """Each scalar from every rank, in rank order (one allgather for all of them)."""
    import tensorflow as tf

    keys = sorted(values)
    if hvd.size() == 1 or not keys:
        return {k: [float(values[k])] for k in keys}
    rows = hvd.allgather(tf.constant([[values[k] for k in keys]], tf.float64)).numpy()
    return {k: [float(v) for v in rows[:, i]] for i, k in enumerate(keys)}


def weights_checksum(model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:16]
