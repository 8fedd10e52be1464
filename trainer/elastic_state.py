"""A ``hvd.elastic`` state for a Keras 3 model and optimizer.

Horovod's ``TensorFlowKerasState`` calls ``optimizer.variables()`` (a property in Keras 3)
and ``broadcast_variables`` (which needs ``Variable.ref``); this one keeps the same
contract — ``commit()`` snapshots, ``restore()`` rolls back after a failure, ``sync()``
makes every rank, including new ones, take rank 0's values — using numpy snapshots and
broadcast + assign.
"""

from __future__ import annotations

from functools import partial

from horovod.common.elastic import ObjectState

from .distributed import broadcast_object, broadcast_variables


class KerasState(ObjectState):
    def __init__(self, hvd, model, optimizer, **kwargs):
        self._hvd = hvd
        self.model = model
        self.optimizer = optimizer
        self._snapshot = self._read()
        super().__init__(bcast_object=partial(broadcast_object, hvd), get_rank=hvd.rank, **kwargs)

    def _variables(self) -> list:
        return list(self.model.weights) + list(self.optimizer.variables)

    def _read(self) -> list:
        return [v.numpy().copy() for v in self._variables()]

    def save(self) -> None:
        self._snapshot = self._read()
        super().save()

    def restore(self) -> None:
        for var, value in zip(self._variables(), self._snapshot):
            var.assign(value)
        super().restore()

    def sync(self) -> None:
        broadcast_variables(self._hvd, self._variables(), root_rank=0)
        self._snapshot = self._read()
        super().sync()
