"""Parameter averaging (the chapter's alternative to gradient sharing).

Ranks take local steps; every ``K`` steps their weights (and, if asked, the optimizer's
slots, e.g. Adam's moments) are replaced by the mean over ranks, in one grouped allreduce.
"""

from __future__ import annotations


def optimizer_slots(optimizer) -> list:
    """The optimizer's per-weight state, without the step counter and learning rate:
    those are equal on every rank already, and averaging an int64 counter is meaningless."""
    skip = {id(optimizer.iterations), id(getattr(optimizer, "_learning_rate", None))}
    return [v for v in optimizer.variables if id(v) not in skip and v.dtype.startswith("float")]


def average_weights(hvd, model, optimizer, *, include_optimizer: bool, compression) -> None:
    if hvd.size() == 1:
        return  # one rank is its own mean
    # model.weights includes non-trainable state (BatchNorm statistics), which drifts apart
    # during local steps just like the trainable weights.
    variables = list(model.weights)
    if include_optimizer:
        variables += optimizer_slots(optimizer)
    means = hvd.grouped_allreduce([v.value for v in variables], op=hvd.Average, compression=compression)
    for var, mean in zip(variables, means):
        var.assign(mean)
