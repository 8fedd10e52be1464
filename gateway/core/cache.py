"""Triton's response cache: a model's answers kept by the exact bytes of their inputs.

A model opts in with ``response_cache { enable: true }`` in its config.pbtxt; the server
bounds the cache in bytes (``Settings.response_cache_bytes``, Triton's ``--cache-config
local,size=``) and evicts the least recently used answers first.

Entries belong to one loaded version (its ``ServedVersion``, the *owner*), never to a model
name: a new version, a reload of the same number and a promotion all route to another owner,
so none of them can be answered from a stale entry. An owner's entries go when it is
unloaded (swept at the next insert) or collected (a weak reference's callback).

All calls happen on the event loop: no locks.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .tensors import to_raw
from .types import InputTensor

ENTRY_OVERHEAD = 200  # bytes of bookkeeping per entry (key, dict slots), so tiny answers still count


def request_key(inputs: list[InputTensor]) -> bytes:
    """A digest of every input's name, datatype, shape and raw bytes (in name order: the
    order a client lists inputs in does not change the answer)."""
    digest = hashlib.blake2b(digest_size=32)
    for tensor in sorted(inputs, key=lambda t: t.name):
        name = tensor.name.encode()
        data = tensor.data
        raw = to_raw(data) if data.dtype == object else np.ascontiguousarray(data).view(np.uint8)
        digest.update(b"%d:%s%s:%d:" % (len(name), name, tensor.datatype.encode(), len(tensor.shape)))
        digest.update(np.asarray(tensor.shape, dtype="<i8").tobytes())
        digest.update(b"%d:" % len(raw))
        digest.update(raw)
    return digest.digest()


def answer_bytes(outputs: dict[str, np.ndarray]) -> int:
    size = ENTRY_OVERHEAD
    for array in outputs.values():
        if array.dtype == object:  # BYTES: the elements themselves, and a pointer each
            size += sum(len(x) if isinstance(x, bytes) else len(str(x)) for x in array.reshape(-1)) + 8 * array.size
        else:
            size += array.nbytes
    return size


@dataclass(eq=False)
class _Partition:
    owner: weakref.ref
    keys: set[bytes] = field(default_factory=set)


class ResponseCache:
    def __init__(self, capacity_bytes: int, live: Callable[[object], bool]) -> None:
        """``live(owner)``: whether an owner still serves (its entries are swept when not)."""
        self.capacity_bytes = capacity_bytes
        self.bytes = 0
        self._live = live
        self._entries: OrderedDict[tuple[int, bytes], tuple[dict[str, np.ndarray], int]] = OrderedDict()
        self._partitions: dict[int, _Partition] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, owner: object, key: bytes) -> dict[str, np.ndarray] | None:
        entry = self._entries.get((id(owner), key))
        if entry is None:
            return None
        self._entries.move_to_end((id(owner), key))
        return entry[0]

    def put(self, owner: object, key: bytes, outputs: dict[str, np.ndarray]) -> None:
        """Keep a copy of ``outputs`` (a batch's split answer may be a view into the whole
        batch; its own copy is what the byte bound counts, and nobody can change it)."""
        self._sweep()
        size = answer_bytes(outputs)
        if size > self.capacity_bytes:
            return
        copies = {}
        for name, array in outputs.items():
            copy = np.array(array, copy=True)
            copy.flags.writeable = False
            copies[name] = copy
        slot = (id(owner), key)
        old = self._entries.pop(slot, None)
        if old is not None:
            self.bytes -= old[1]
        self._entries[slot] = (copies, size)
        self.bytes += size
        self._partition(owner).keys.add(key)
        while self.bytes > self.capacity_bytes:
            (owner_id, evicted), (_, freed) = self._entries.popitem(last=False)
            self.bytes -= freed
            self._partitions[owner_id].keys.discard(evicted)

    def drop(self, owner_id: int) -> None:
        """Forget every entry of one owner."""
        partition = self._partitions.pop(owner_id, None)
        if partition is None:
            return
        for key in partition.keys:
            _, size = self._entries.pop((owner_id, key))
            self.bytes -= size

    def owners(self) -> int:
        return len(self._partitions)

    def _partition(self, owner: object) -> _Partition:
        partition = self._partitions.get(id(owner))
        if partition is None:
            owner_id = id(owner)
            # The callback runs when the owner is collected, before its id can be reused.
            ref = weakref.ref(owner, lambda _: self.drop(owner_id))
            partition = self._partitions[owner_id] = _Partition(ref)
        return partition

    def _sweep(self) -> None:
        for owner_id, partition in list(self._partitions.items()):
            owner = partition.owner()
            if owner is None or not self._live(owner):
                self.drop(owner_id)
