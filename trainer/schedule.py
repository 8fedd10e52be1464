"""Learning rate scaled by the world size, reached by a linear warm-up.

With allreduce, N ranks make one step from N batches, so the step may be N times larger
(Goyal et al., "Accurate, Large Minibatch SGD"); jumping there at once destabilises the
first steps, so the rate climbs from the base rate over the warm-up steps.
"""

from __future__ import annotations


def learning_rate(base: float, world_size: int, step: int, warmup_steps: int, *, scale: bool = True) -> float:
    target = base * world_size if scale else base
    if warmup_steps <= 0 or step >= warmup_steps:
        return target
    return base + (target - base) * step / warmup_steps
