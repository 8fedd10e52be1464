"""HTTP handlers of the loop: feedback, fine-tune jobs, canary control. Thin, like routes.py;
every route needs the API key when one is configured."""

from __future__ import annotations

from aiohttp import web

from ..core.errors import BadRequest, brief
from .keys import BUDGET, CANARY, FEEDBACK, GATEWAY, JOBS
from .routes import _header_length, _json, _model, protected, read_request


@protected
async def feedback(request: web.Request) -> web.Response:
    model, _ = _model(request)
    header_length = _header_length(request)
    service = request.app[FEEDBACK]
    spec = _RowLimit(service.input_spec(model))  # 404/503/400 before reading a body for nothing
    with request.app[BUDGET].claim() as claim:
        parsed, size = await read_request(request, header_length, spec, claim)
        return _json(await service.submit(model, parsed, size))


class _RowLimit:
    """One feedback call carries at most the model's ``max_batch_size`` rows, as one infer
    call does: the rows are checked, decoded and stored as one batch under the decode budget.
    Larger sets are refused before any data is decoded, with a message saying to split them,
    rather than split here: a client that splits knows which rows were stored when a call
    fails, and one call never holds more memory than an infer call could."""

    def __init__(self, spec) -> None:
        self.spec = spec
        self.limit = getattr(getattr(spec, "signature", None), "max_batch_size", 0)

    def check_input(self, name: str, datatype: str, shape: list[int]) -> None:
        if self.limit > 0 and isinstance(shape, list | tuple) and shape and isinstance(shape[0], int) \
                and shape[0] > self.limit:
            raise BadRequest(f"feedback tensor {brief(name)} has {shape[0]} rows; one feedback call takes at most "
                             f"the model's max_batch_size, {self.limit}: send the rows in several calls of up to "
                             f"{self.limit}")
        self.spec.check_input(name, datatype, shape)


@protected
async def finetune_start(request: web.Request) -> web.Response:
    model, _ = _model(request)
    return _json(await request.app[JOBS].start(model), status=202)


@protected
async def finetune_status(request: web.Request) -> web.Response:
    model, _ = _model(request)
    return _json(await request.app[JOBS].status(model, request.match_info["job_id"]))


@protected
async def finetune_cancel(request: web.Request) -> web.Response:
    model, _ = _model(request)
    return _json(await request.app[JOBS].cancel(model, request.match_info["job_id"]))


@protected
async def canary_state(request: web.Request) -> web.Response:
    model, _ = _model(request)
    request.app[FEEDBACK].registry.record(model)
    return _json({"name": model, **request.app[CANARY].parameters(model)})


@protected
async def canary_promote(request: web.Request) -> web.Response:
    model, _ = _model(request)
    return _json(await request.app[CANARY].promote(model))


@protected
async def canary_rollback(request: web.Request) -> web.Response:
    model, _ = _model(request)
    return _json(await request.app[CANARY].rollback(model))


@protected
async def loop_leader(request: web.Request) -> web.Response:
    """Who runs the loop's decisions among the workers and replicas over this repository."""
    leadership = request.app[GATEWAY].loop.leadership
    return _json({"identity": leadership.identity, "leader": leadership.is_leader,
                  "holder": await leadership.holder(), "terms": leadership.terms,
                  "elected_at": leadership.elected_at})


def add_loop_routes(app: web.Application) -> None:
    model = "/v2/models/{model}"
    app.router.add_routes([
        web.post(f"{model}/feedback", feedback),
        web.post(f"{model}/finetune", finetune_start),
        web.get(f"{model}/finetune/{{job_id}}", finetune_status),
        web.post(f"{model}/finetune/{{job_id}}/cancel", finetune_cancel),
        web.get(f"{model}/canary", canary_state),
        web.post(f"{model}/canary/promote", canary_promote),
        web.post(f"{model}/canary/rollback", canary_rollback),
        web.get("/v2/loop/leader", loop_leader),
    ])
