"""Every rank holds the same model: layer state kept in step, and checked before publish.

Averaging gradients every step keeps the trainable weights equal, but a layer's own state —
BatchNormalization's moving mean and variance — is updated by each rank from its own
batches, and drifts apart. Horovod's ``hvd.SyncBatchNormalization`` would pool the batch
moments inside every step, but it subclasses the Keras 2 layer: on Keras 3 it cannot even be
built (``fused`` is refused; its ``_moments`` override has Keras 2's signature). So the
float non-trainable variables are averaged over the ranks in one grouped allreduce at the end
of every epoch, before the held-out score, the checkpoint and the publish — what parameter
averaging does for the weights. Within an epoch each rank normalises by its own batch
statistics, as it would in single-process training; only the running estimates are pooled.

Before rank 0 publishes, :func:`check_consistency` compares a digest of every variable on
every rank: a difference fails the job (exit 1) and nothing is published.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .distributed import weights_checksum
from .errors import JobFailed

DIGEST_BYTES = 8


def sync_non_trainable(hvd, model) -> int:
    """Replace the model's float non-trainable variables by their mean over the ranks;
    returns how many were averaged (none on one rank: no collective is issued)."""
    variables = [v for v in model.non_trainable_weights if str(v.dtype).startswith("float")]
    if hvd.size() == 1 or not variables:
        return 0
    means = hvd.grouped_allreduce([v.value for v in variables], op=hvd.Average)
    for var, mean in zip(variables, means):
        var.assign(mean)
    return len(variables)


def _row(model) -> np.ndarray:
    """This rank's whole-model checksum, then one digest per variable, as bytes."""
    parts = [bytes.fromhex(weights_checksum(model))[:DIGEST_BYTES]]
    for w in model.get_weights():
        parts.append(hashlib.sha256(np.ascontiguousarray(w).tobytes()).digest()[:DIGEST_BYTES])
    return np.frombuffer(b"".join(parts), dtype=np.uint8)


def differing_variables(names: list[str], rows: np.ndarray) -> list[str]:
    """Names of the variables whose digest is not the same in every rank's row."""
    digests = rows[:, DIGEST_BYTES:].reshape(len(rows), len(names), DIGEST_BYTES)
    return [name for i, name in enumerate(names) if (digests[:, i] != digests[0, i]).any()]


def check_consistency(hvd, model) -> list[str]:
    """Every rank's weights checksum, in rank order; JobFailed naming the variables that
    differ if the replicas are not identical. Every rank reaches the same verdict."""
    import tensorflow as tf

    mine = _row(model)
    rows = mine[None, :] if hvd.size() == 1 else hvd.allgather(tf.constant(mine[None, :])).numpy()
    checksums = [row[:DIGEST_BYTES].tobytes().hex() for row in rows]
    names = [getattr(w, "path", w.name) for w in model.weights]
    differing = differing_variables(names, rows)
    if differing:
        shown = ", ".join(differing[:12]) + (f" and {len(differing) - 12} more" if len(differing) > 12 else "")
        raise JobFailed(f"the ranks' models differ in {len(differing)} of {len(names)} variables ({shown}); "
                        "nothing was published", details={"weights_checksums": checksums,
                                                          "differing_variables": differing})
    return checksums
