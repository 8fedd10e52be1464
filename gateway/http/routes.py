"""HTTP handlers: parse the request, call the DataPlane, write the answer. Nothing else."""

from __future__ import annotations

import asyncio
import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from model_repo import check_model_name
from prometheus_client import CONTENT_TYPE_LATEST

from ..core.budget import Claim
from ..core.errors import BadRequest, BinaryDataError, ClientClosedRequest, ServerNotReady, Unauthorized
from ..core.shm import SharedMemoryRegions
from ..core.types import InferRequest, InputSpec
from .codec import brief, decode_request, encode_response, parse_json_object, response_cost
from .keys import BUDGET, DATAPLANE, GATEWAY, SETTINGS, SHM

HEADER_LENGTH = "Inference-Header-Content-Length"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _model(request: web.Request) -> tuple[str, str | None]:
    return check_model_name(request.match_info["model"]), request.match_info.get("version")


def _header_length(request: web.Request) -> int | None:
    """The binary extension's JSON header length, or None for a plain JSON body."""
    header = request.headers.get(HEADER_LENGTH)
    if header is None:
        return None
    if not (header.isascii() and header.isdigit()):
        raise BinaryDataError(f"{HEADER_LENGTH} must be a non-negative integer, got {header[:32]!r}")
    return int(header)


async def read_body(request: web.Request, claim: Claim) -> bytes:
    """The body, charged to ``claim`` before it is read: its Content-Length, or (chunked or
    compressed, the size unknown until read) the largest body allowed, then what it was."""
    # Twice the length: aiohttp gathers the chunks, then joins them into one bytes object.
    if request.content_length is not None and not request.headers.get("Content-Encoding"):
        claim.take(2 * request.content_length, "the request body")
    else:
        claim.take(request.app[SETTINGS].max_body_bytes, "a chunked or compressed request body")
    try:
        body = await request.read()
    except RequestPayloadError as exc:  # e.g. Content-Encoding: gzip on bytes that are not gzip
        raise BadRequest(f"cannot read the request body: {exc}") from None
    except ConnectionResetError:
        raise ClientClosedRequest("the client closed the connection before sending the whole body") from None
    claim.shrink_to(2 * len(body))
    return body


async def read_request(request: web.Request, header_length: int | None, spec: InputSpec, claim: Claim,
                       shm: SharedMemoryRegions | None = None, trace=None) -> tuple[InferRequest, int]:
    """An inference-shaped body (infer, feedback) read and decoded under ``claim``, and its
    size. Large bodies are decoded in a thread so one big JSON request never stalls the loop.
    ``trace``: the request's trace (tracing.py), which gets its receive and decode spans."""
    settings = request.app[SETTINGS]
    body = await read_body(request, claim)
    if trace is not None:
        trace.phase("receive")
    decode = functools.partial(decode_request, body, header_length, max_elements=settings.max_elements,
                               spec=spec, claim=claim, shm=shm)
    parsed = await asyncio.to_thread(decode) if len(body) >= settings.codec_offload_bytes else decode()
    if trace is not None:
        trace.decoded(parsed.inputs)
    return parsed, len(body)


def _api_key(request: web.Request, header: str) -> bytes:
    given = request.headers.get(header, "")
    auth = request.headers.get("Authorization", "")
    if not given and auth.startswith("Bearer "):
        given = auth[len("Bearer "):]
    # aiohttp keeps header bytes that are not UTF-8 as surrogate escapes: compare the bytes sent.
    return given.encode("utf-8", "surrogateescape")


def protected(handler: Handler) -> Handler:
    """Require the API key (when one is configured) on a control route."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        settings = request.app[SETTINGS]
        if settings.api_key is not None:
            expected = settings.api_key.get_secret_value().encode()
            if not hmac.compare_digest(_api_key(request, settings.api_key_header), expected):
                raise Unauthorized(f"this route needs the API key in the {settings.api_key_header} header")
        return await handler(request)

    return guarded


# ------------------------------------------------------------------ health
async def live(request: web.Request) -> web.Response:
    return _json({"live": request.app[DATAPLANE].live()})


async def ready(request: web.Request) -> web.Response:
    if not request.app[DATAPLANE].ready():
        raise ServerNotReady("not ready: loading models or shutting down")
    return _json({"ready": True})


async def server_metadata(request: web.Request) -> web.Response:
    return _json(request.app[DATAPLANE].server_metadata())


# ------------------------------------------------------------------ models
async def model_metadata(request: web.Request) -> web.Response:
    return _json(request.app[DATAPLANE].model_metadata(*_model(request)))


async def model_ready(request: web.Request) -> web.Response:
    model, version = _model(request)
    request.app[DATAPLANE].model_ready(model, version)  # raises 404/503 when not ready
    return _json({"name": model, "ready": True})


async def model_config(request: web.Request) -> web.Response:
    return _json(request.app[DATAPLANE].model_config(*_model(request)))


async def model_stats(request: web.Request) -> web.Response:
    if "model" not in request.match_info:
        return _json(request.app[DATAPLANE].statistics())
    return _json(request.app[DATAPLANE].statistics(*_model(request)))


LINEAGE_HEADER = "Tunegate-Lineage-Id"  # model:version:sha256-prefix of the version that answered


async def infer(request: web.Request) -> web.Response:
    model, version = _model(request)
    settings, dataplane = request.app[SETTINGS], request.app[DATAPLANE]
    header_length = _header_length(request)
    spec = dataplane.input_spec(model, version)  # 404/503 before reading a body for nothing
    tracing = dataplane.tracing
    trace = tracing.begin(model, request.headers, "http") if tracing.active else None  # None when off
    try:
        with request.app[BUDGET].claim() as claim:
            shm = request.app[SHM]
            parsed, size = await read_request(request, header_length, spec, claim, shm, trace)
            offload = size >= settings.codec_offload_bytes
            result = await dataplane.infer(model, version, parsed, trace)
            if trace is not None:
                trace.mark()
            claim.take(response_cost(result), "the response")
            placements = {o.name: o.shared_memory for o in parsed.outputs or () if o.shared_memory}
            encode = functools.partial(encode_response, result, placements, shm)
            payload, json_length = await asyncio.to_thread(encode) if offload else encode()
    except BaseException as exc:
        if trace is not None:
            trace.fail(exc)
        raise
    if trace is not None:
        trace.phase("encode")
        trace.finish()
    headers = {LINEAGE_HEADER: result.lineage_id} if result.lineage_id else {}
    content_type = "application/json"
    if json_length is not None:
        headers[HEADER_LENGTH] = str(json_length)  # of the header before compression, as in Triton
        content_type = "application/octet-stream"
    # aiohttp compresses bodies over 4 KiB in its executor, off the loop.
    response = web.Response(body=payload, content_type=content_type, headers=headers)
    coding = _response_coding(request.headers.get("Accept-Encoding"), len(payload))
    if coding is not None:
        response.enable_compression(coding)
    return response


COMPRESS_MIN_BYTES = 1024  # below this, compressing costs more time than it saves bytes
_CODINGS = (("gzip", web.ContentCoding.gzip), ("deflate", web.ContentCoding.deflate))


def _response_coding(accept: str | None, size: int) -> web.ContentCoding | None:
    """gzip or deflate (the two tritonclient decodes) when the client accepts one with q > 0
    and the body is large enough to gain; aiohttp's own choice ignores q=0."""
    if not accept or size < COMPRESS_MIN_BYTES:
        return None
    weights = {}
    for item in accept.lower().split(","):
        name, _, param = item.partition(";")
        param = param.strip()
        try:
            weights[name.strip()] = float(param[2:]) if param.startswith("q=") else 1.0
        except ValueError:
            weights[name.strip()] = 0.0
    for name, coding in _CODINGS:
        if weights.get(name, weights.get("*", 0.0)) > 0:
            return coding
    return None


# -------------------------------------------------------------- repository
async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    with request.app[BUDGET].claim() as claim:
        raw = await read_body(request, claim)
        if not raw.strip():
            return {}
        return parse_json_object(raw, "body", claim)


async def repository_index(request: web.Request) -> web.Response:
    body = await _json_body(request)
    ready = body.get("ready", False)
    if not isinstance(ready, bool):
        raise BadRequest(f"'ready' must be true or false, got {brief(ready)}")
    return _json(request.app[DATAPLANE].repository_index(ready))


@protected
async def repository_load(request: web.Request) -> web.Response:
    model, _ = _model(request)
    body = await _json_body(request)
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest(f"load 'parameters' must be an object, got {brief(parameters)}")
    await request.app[DATAPLANE].load(model, parameters)
    return _json({})


@protected
async def repository_unload(request: web.Request) -> web.Response:
    model, _ = _model(request)
    await request.app[DATAPLANE].unload(model)
    return _json({})


# ----------------------------------------------------------------- metrics
async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=await request.app[GATEWAY].scrape(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    # aiohttp tries the routes under /v2/models one regex at a time, in registration order:
    # inference, the route that carries the traffic, comes first.
    app.router.add_routes([
        web.post(f"{model}/infer", infer),
        web.post(f"{versioned}/infer", infer),
        web.get("/v2/health/live", live),
        web.get("/v2/health/ready", ready),
        web.get("/v2", server_metadata),
        web.get("/v2/models/stats", model_stats),
        web.get(model, model_metadata),
        web.get(versioned, model_metadata),
        web.get(f"{model}/ready", model_ready),
        web.get(f"{versioned}/ready", model_ready),
        web.get(f"{model}/config", model_config),
        web.get(f"{versioned}/config", model_config),
        web.get(f"{model}/stats", model_stats),
        web.get(f"{versioned}/stats", model_stats),
        web.post("/v2/repository/index", repository_index),
        web.post("/v2/repository/models/{model}/load", repository_load),
        web.post("/v2/repository/models/{model}/unload", repository_unload),
        web.get("/metrics", metrics),
    ])
