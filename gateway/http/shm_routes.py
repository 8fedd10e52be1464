"""Triton's shared-memory extensions over HTTP: system shared memory (``core/shm.py``) and,
on this server which runs no CUDA shared memory, clear refusals for the CUDA routes.
Registration maps a client's ``/dev/shm`` object: it needs the API key when one is set."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..core.errors import BadRequest
from .keys import SHM
from .routes import _json, _json_body, protected

SYSTEM = "/v2/systemsharedmemory"
CUDA = "/v2/cudasharedmemory"


async def status(request: web.Request) -> web.Response:
    return _json(request.app[SHM].status(request.match_info.get("region")))


@protected
async def register(request: web.Request) -> web.Response:
    body = await _json_body(request)
    region = request.match_info["region"]
    await asyncio.to_thread(request.app[SHM].register, region, body.get("key"), body.get("offset", 0),
                            body.get("byte_size"))
    return _json({})


@protected
async def unregister(request: web.Request) -> web.Response:
    request.app[SHM].unregister(request.match_info.get("region"))
    return _json({})


async def cuda(request: web.Request) -> web.Response:
    raise BadRequest("CUDA shared memory is not supported by this server (it keeps tensors in host "
                     "memory): use system shared memory or send the tensors in the request")


def add_shared_memory_routes(app: web.Application) -> None:
    region = "/region/{region}"
    app.router.add_routes([
        web.get(f"{SYSTEM}/status", status),
        web.get(f"{SYSTEM}{region}/status", status),
        web.post(f"{SYSTEM}{region}/register", register),
        web.post(f"{SYSTEM}/unregister", unregister),
        web.post(f"{SYSTEM}{region}/unregister", unregister),
        web.get(f"{CUDA}/status", cuda),
        web.get(f"{CUDA}{region}/status", cuda),
        web.post(f"{CUDA}{region}/register", cuda),
        web.post(f"{CUDA}/unregister", cuda),
        web.post(f"{CUDA}{region}/unregister", cuda),
    ])
