"""Triton's trace and logging extensions over HTTP: ``/v2[/models/{m}]/trace/setting`` and
``/v2/logging``. GET reads; POST changes (a control route: the API key when one is set) and
answers the settings as they now are."""

from __future__ import annotations

import orjson
from aiohttp import web
from model_repo import check_model_name

from .keys import DATAPLANE
from .routes import _json_body, protected


def _json(data) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


def _scope(request: web.Request) -> str | None:
    model = request.match_info.get("model")
    return None if model is None else check_model_name(model)


async def get_trace(request: web.Request) -> web.Response:
    return _json(request.app[DATAPLANE].tracing.settings_of(_scope(request)))


@protected
async def update_trace(request: web.Request) -> web.Response:
    model, body = _scope(request), await _json_body(request)
    return _json(request.app[DATAPLANE].tracing.update(body, model))


async def get_logging(request: web.Request) -> web.Response:
    return _json(request.app[DATAPLANE].logs.show())


@protected
async def update_logging(request: web.Request) -> web.Response:
    body = await _json_body(request)
    return _json(request.app[DATAPLANE].logs.update(body))


def add_trace_routes(app: web.Application) -> None:
    app.router.add_routes([
        web.get("/v2/trace/setting", get_trace),
        web.post("/v2/trace/setting", update_trace),
        web.get("/v2/models/{model}/trace/setting", get_trace),
        web.post("/v2/models/{model}/trace/setting", update_trace),
        web.get("/v2/logging", get_logging),
        web.post("/v2/logging", update_logging),
    ])
