"""The few Horovod collectives the trainer uses, in forms that work with Keras 3 variables.

``hvd.broadcast_variables`` and ``hvd.DistributedGradientTape`` call ``Variable.ref()``, which
Keras 3 variables lack (horovod#4290); broadcasting each variable's value and assigning it
back works for Keras and TensorFlow variables alike.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure_threads(hvd, override: int | None = None) -> int:
    """Give each rank an equal share of this host's cores (cores / local size).

    Must run before TensorFlow creates its runtime, i.e. before the first op."""
    import tensorflow as tf

    threads = override or max(1, usable_cores() // hvd.local_size())
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return threads


def broadcast_variables(hvd, variables, root_rank: int = 0) -> None:
    for var in variables:
        var.assign(hvd.broadcast(var.value if hasattr(var, "value") else var, root_rank))


def average_across_ranks(hvd, values: dict[str, float]) -> dict[str, float]:
    """Mean of each scalar over all ranks (one allreduce for all of them)."""
    import tensorflow as tf

    if not values:
        return {}
    keys = sorted(values)
    reduced = hvd.allreduce(tf.constant([values[k] for k in keys], tf.float64), op=hvd.Average)
    return dict(zip(keys, (float(v) for v in reduced.numpy())))


def weights_checksum(model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:16]


def gather_checksums(hvd, model) -> list[str]:
    """Every rank's weights checksum, in rank order: equal when the replicas agree."""
    import tensorflow as tf

    mine = np.frombuffer(bytes.fromhex(weights_checksum(model)), dtype=np.uint8)
    gathered = hvd.allgather(tf.constant(mine[None, :])).numpy()
    return [row.tobytes().hex() for row in gathered]
