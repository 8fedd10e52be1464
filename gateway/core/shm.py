"""Triton's system shared-memory extension: regions that clients on this host register, so
tensors travel through ``/dev/shm`` instead of the request body.

A client creates a POSIX shared-memory object (``tritonclient.utils.shared_memory``), writes
inputs into it and registers it under a name with a key, an offset and a size; requests then
name ``shared_memory_region``/``_offset``/``_byte_size`` instead of sending data, and outputs
may ask to be written into a region the same way. Every access is checked against the
region's registered bounds. Off unless ``allow_shared_memory`` (as Triton's client shared
memory is a trust decision: any local process could register).

The server maps an object with ``os.open`` and ``mmap`` rather than
``multiprocessing.shared_memory``, whose resource tracker would unlink the client's object
when the server exits. Inputs are copied out of the region when decoded, so a region can be
unregistered, or rewritten by its client, while the request is queued.
"""

from __future__ import annotations

import mmap
import os
import re
from dataclasses import dataclass

import numpy as np
from model_repo import datatypes

from .budget import Claim
from .errors import BadRequest, brief
from .tensors import from_raw, to_raw

SHM_ROOT = "/dev/shm"
_KEY = re.compile(r"/?[A-Za-z0-9._-]{1,200}")


@dataclass
class _Region:
    key: str
    offset: int
    byte_size: int
    mapping: mmap.mmap

    def status(self, name: str) -> dict:
        return {"name": name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}


class SharedMemoryRegions:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._regions: dict[str, _Region] = {}

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise BadRequest("system shared memory is off on this server (setting allow_shared_memory, "
                             "TUNEGATE_ALLOW_SHARED_MEMORY=true); send the tensors in the request instead")

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Map ``byte_size`` bytes at ``offset`` of the shared-memory object ``key`` (blocking)."""
        self._check_enabled()
        if not isinstance(name, str) or not name:
            raise BadRequest("a shared memory region needs a non-empty name")
        if name in self._regions:
            raise BadRequest(f"shared memory region {name!r} is already registered; unregister it first")
        if not isinstance(key, str) or not _KEY.fullmatch(key) or key.strip("/") in ("", ".", ".."):
            raise BadRequest(f"shared memory key {key[:64]!r} is not a POSIX shared memory name such as "
                             "'/my_region'" if isinstance(key, str) else "shared memory 'key' must be a string")
        for what, value in (("offset", offset), ("byte_size", byte_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise BadRequest(f"shared memory region {name!r}: {what} must be a non-negative integer")
        path = os.path.join(SHM_ROOT, key.lstrip("/"))
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise BadRequest(f"shared memory region {name!r}: cannot open key {key!r}: {exc.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            if byte_size == 0 or offset + byte_size > size:
                raise BadRequest(f"shared memory region {name!r}: offset {offset} + byte_size {byte_size} does "
                                 f"not fit the {size} bytes of {key!r}")
            mapping = mmap.mmap(fd, offset + byte_size)
        finally:
            os.close(fd)
        self._regions[name] = _Region(key, offset, byte_size, mapping)

    def unregister(self, name: str | None = None) -> None:
        """Forget one region, or every region (``name`` None); unknown names are no error."""
        self._check_enabled()
        names = list(self._regions) if name is None else [name]
        for region_name in names:
            region = self._regions.pop(region_name, None)
            if region is not None:
                _close(region.mapping)

    def status(self, name: str | None = None) -> list[dict]:
        self._check_enabled()
        if name is None:
            return [region.status(n) for n, region in sorted(self._regions.items())]
        return [self._region(name).status(name)]

    def _region(self, name: str) -> _Region:
        region = self._regions.get(name)
        if region is None:
            raise BadRequest(f"no shared memory region {name!r} is registered")
        return region

    def view(self, name: str, offset: int, byte_size: int, what: str) -> memoryview:
        """``byte_size`` bytes at ``offset`` inside region ``name``, for ``what`` (a tensor)."""
        self._check_enabled()
        region = self._region(name)
        for field_name, value in (("shared_memory_offset", offset), ("shared_memory_byte_size", byte_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise BadRequest(f"{what}: {field_name} must be a non-negative integer")
        if offset + byte_size > region.byte_size:
            raise BadRequest(f"{what}: offset {offset} + byte_size {byte_size} runs past shared memory region "
                             f"{name!r} ({region.byte_size} bytes)")
        start = region.offset + offset
        return memoryview(region.mapping)[start:start + byte_size]

    def close(self) -> None:
        for region in self._regions.values():
            _close(region.mapping)
        self._regions.clear()


# ------------------------------------------------- tensors, for every front end
def read_input(shm: SharedMemoryRegions | None, name: str, dtype: datatypes.Datatype, params: dict,
               count: int, claim: Claim | None) -> np.ndarray:
    """An input from the region its parameters name (``shared_memory_region``, ``_offset``,
    ``_byte_size``), copied out."""
    what = f"input {brief(name)}"
    if shm is None:
        raise BadRequest(f"{what}: shared memory is not available here")
    with shm.view(params["shared_memory_region"], params.get("shared_memory_offset", 0),
                  params.get("shared_memory_byte_size"), what) as chunk:
        if claim is not None:
            claim.take(count * (dtype.numpy.itemsize if dtype.v2 != "BYTES" else 0) + len(chunk), what)
        shared = from_raw(name, dtype, chunk, count, claim)
        data = shared.copy()  # the client may rewrite or unregister the region meanwhile
        del shared  # releases the region's buffer before the view is
    return data


def output_placement(shm: SharedMemoryRegions | None, what: str, params: dict) -> tuple[str, int, int] | None:
    """(region, offset, byte_size) an output asks to be written to, checked before inference;
    None when it asks for none."""
    if params.get("shared_memory_region") is None:
        return None
    if shm is None:
        raise BadRequest(f"{what}: shared memory is not available here")
    placement = (params["shared_memory_region"], params.get("shared_memory_offset", 0),
                 params.get("shared_memory_byte_size"))
    shm.view(*placement, what).release()
    return placement


def write_output(shm: SharedMemoryRegions, name: str, array: np.ndarray,
                 placement: tuple[str, int, int]) -> dict:
    """Write an output into its region; the parameters its answer carries instead of data."""
    region, offset, byte_size = placement
    raw = to_raw(array)
    if len(raw) > byte_size:
        raise BadRequest(f"output {brief(name)} is {len(raw)} bytes, more than the {byte_size} bytes "
                         f"given in shared memory region {region!r}")
    with shm.view(region, offset, len(raw), f"output {brief(name)}") as target:
        target[:] = raw
    return {"shared_memory_region": region, "shared_memory_offset": offset, "shared_memory_byte_size": len(raw)}


def _close(mapping: mmap.mmap) -> None:
    try:
        mapping.close()
    except BufferError:  # a request in a worker thread is copying from it: unmapped when freed
        pass
