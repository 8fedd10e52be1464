"""``inference.GRPCInferenceService``: each RPC translates its message to the DataPlane (as
``http/routes.py`` does for HTTP) and back. Nothing else.

Errors are answered in one place (:func:`rpc` and ``errors.status_of``); a streamed infer's
error goes in that answer's ``error_message`` and the stream goes on, as in Triton. The
CUDA shared-memory RPCs answer UNIMPLEMENTED: that feature is not here. ``TraceSetting`` and
``LogSettings`` read and change the same settings as HTTP's trace and logging extensions; a
``TraceSetting`` call with no settings reads them (to clear a model's, send its fields empty).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from model_repo import check_model_name
from prometheus_client import Counter
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from ..core.errors import Unauthorized
from ..core.types import REQUEST_ID
from ..server import Gateway
from .codec import decode_request, encode_response, parameters, response_cost
from .errors import NotAvailable, status_of

Method = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Any]]
# Requests of one stream answered at once: enough to fill a model's batches, bounded so a
# client cannot queue without limit through one stream (the model's queue bounds it too).
STREAM_IN_FLIGHT = 64


def rpc(method: Method) -> Method:
    """Answer any error of ``method`` with its status (CancelledError passes through)."""

    @functools.wraps(method)
    async def handler(self, request, context: grpc.aio.ServicerContext):
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = status_of(exc, method.__name__)
            self.errors.labels(code.name).inc()
            await context.abort(code, message)

    return handler


def _unimplemented(feature: str) -> Method:
    async def handler(self, request, context):
        raise NotAvailable(f"{feature} is not available on this server")

    return rpc(handler)


def _model(name: str, version: str) -> tuple[str, str | None]:
    return check_model_name(name), version or None


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.dataplane = gateway.dataplane
        self.errors = Counter("tunegate_grpc_errors", "gRPC calls answered with an error status, by code",
                              ["code"], registry=gateway.metrics)

    # ------------------------------------------------------------ health
    @rpc
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=self.dataplane.live())

    @rpc
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    @rpc
    async def ModelReady(self, request, context):
        model, version = _model(request.name, request.version)
        try:
            ready = self.dataplane.model_ready(model, version)
        except Exception as exc:  # Triton answers "not ready" for a model it cannot serve
            if getattr(exc, "status", None) not in (404, 503):
                raise
            ready = False
        return pb.ModelReadyResponse(ready=ready)

    @rpc
    async def ServerMetadata(self, request, context):
        return json_format.ParseDict(self.dataplane.server_metadata(), pb.ServerMetadataResponse())

    # ------------------------------------------------------------ models
    @rpc
    async def ModelMetadata(self, request, context):
        metadata = self.dataplane.model_metadata(*_model(request.name, request.version))
        # The v2 gRPC message has no metadata parameters (canary, jobs): HTTP shows them.
        return json_format.ParseDict(metadata, pb.ModelMetadataResponse(), ignore_unknown_fields=True)

    @rpc
    async def ModelConfig(self, request, context):
        model, version = _model(request.name, request.version)
        return pb.ModelConfigResponse(config=self.dataplane.model_config_proto(model, version))

    @rpc
    async def ModelStatistics(self, request, context):
        model, version = (_model(request.name, request.version) if request.name else (None, None))
        return json_format.ParseDict(self.dataplane.statistics(model, version), pb.ModelStatisticsResponse(),
                                     ignore_unknown_fields=True)

    # ------------------------------------------------------------ inference
    @rpc
    async def ModelInfer(self, request, context):
        return await self._infer(request, context)

    async def _infer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        # Request capture files the inputs under this id; a request without one gets the
        # gateway's next, and its answer carries it, so it can be labelled later too.
        request_id = request.id or self.gateway.request_ids.next()
        token = REQUEST_ID.set(request_id)
        trace = None
        try:
            model, version = _model(request.model_name, request.model_version)
            spec = self.dataplane.input_spec(model, version)  # NOT_FOUND/UNAVAILABLE before decoding
            tracing = self.dataplane.tracing
            if tracing.active:  # the one check when tracing is off; traceparent from the metadata
                trace = tracing.begin(model, dict(context.invocation_metadata() or ()), "grpc")
            with self.gateway.budget.claim() as claim:
                size = request.ByteSize()
                claim.take(size, "the request message")  # already received: held while it is decoded
                shm = self.gateway.shm
                decode = functools.partial(decode_request, request, max_elements=self.settings.max_elements,
                                           spec=spec, claim=claim, shm=shm)
                # Large requests are decoded in a thread so one never stalls the loop.
                parsed = await asyncio.to_thread(decode) if size >= self.settings.codec_offload_bytes else decode()
                if trace is not None:
                    trace.decoded(parsed.inputs)
                result = await self.dataplane.infer(model, version, parsed, trace)
                if trace is not None:
                    trace.mark()
                cost = response_cost(result)
                claim.take(cost, "the response")
                placements = {o.name: o.shared_memory for o in parsed.outputs or () if o.shared_memory}
                encode = functools.partial(encode_response, result, placements, shm)
                answer = await asyncio.to_thread(encode) if cost >= self.settings.codec_offload_bytes else encode()
                answer.id = request_id
                if trace is not None:
                    trace.phase("encode")
                    trace.finish()
                return answer
        except BaseException as exc:
            if trace is not None:
                trace.fail(exc)
            raise
        finally:
            REQUEST_ID.reset(token)

    async def ModelStreamInfer(self, request_iterator, context) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests are answered as they complete (up to STREAM_IN_FLIGHT at once), each
        answer naming its request's id; an error is that answer's ``error_message``."""
        answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(STREAM_IN_FLIGHT)

        async def answer(request: pb.ModelInferRequest) -> None:
            try:
                answers.put_nowait(pb.ModelStreamInferResponse(infer_response=await self._infer(request, context)))
            except Exception as exc:
                code, message = status_of(exc, "ModelStreamInfer")
                self.errors.labels(code.name).inc()
                answers.put_nowait(pb.ModelStreamInferResponse(
                    error_message=message, infer_response=pb.ModelInferResponse(
                        model_name=request.model_name, model_version=request.model_version, id=request.id)))
            finally:
                slots.release()

        async def read() -> None:
            async with asyncio.TaskGroup() as group:  # every answer is queued before it ends
                async for request in request_iterator:
                    await slots.acquire()
                    group.create_task(answer(request))

        reader = asyncio.create_task(read(), name="grpc stream reader")
        reader.add_done_callback(lambda _: answers.put_nowait(None))
        try:
            while (item := await answers.get()) is not None:
                yield item
            reader.result()  # a broken request stream ends the call with its error
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    # ------------------------------------------------------------ repository
    @rpc
    async def RepositoryIndex(self, request, context):
        rows = self.dataplane.repository_index(request.ready)
        return json_format.ParseDict({"models": rows}, pb.RepositoryIndexResponse())

    @rpc
    async def RepositoryModelLoad(self, request, context):
        self._authorize(context)
        await self.dataplane.load(check_model_name(request.model_name), parameters(request.parameters))
        return pb.RepositoryModelLoadResponse()

    @rpc
    async def RepositoryModelUnload(self, request, context):
        self._authorize(context)
        await self.dataplane.unload(check_model_name(request.model_name))
        return pb.RepositoryModelUnloadResponse()

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        """The API key (when one is configured) from the call's metadata: the configured
        header's name in lower case, or ``authorization: Bearer <key>``."""
        if self.settings.api_key is None:
            return
        header = self.settings.api_key_header.lower()
        metadata = dict(context.invocation_metadata() or ())
        given, auth = metadata.get(header, ""), metadata.get("authorization", "")
        if not given and isinstance(auth, str) and auth.startswith("Bearer "):
            given = auth[len("Bearer "):]
        given = given.encode("utf-8", "surrogateescape") if isinstance(given, str) else given
        if not hmac.compare_digest(given, self.settings.api_key.get_secret_value().encode()):
            raise Unauthorized(f"this call needs the API key in the {header!r} metadata "
                               "(or 'authorization: Bearer <key>')")

    # ------------------------------------------------- features not here
    # ---------------------------------------------------------- shared memory
    @rpc
    async def SystemSharedMemoryStatus(self, request, context):
        regions = self.gateway.shm.status(request.name or None)
        return json_format.ParseDict({"regions": {r["name"]: r for r in regions}},
                                     pb.SystemSharedMemoryStatusResponse())

    @rpc
    async def SystemSharedMemoryRegister(self, request, context):
        self._authorize(context)  # it maps a client's /dev/shm object: a trust decision
        await asyncio.to_thread(self.gateway.shm.register, request.name, request.key, request.offset,
                                request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    @rpc
    async def SystemSharedMemoryUnregister(self, request, context):
        self._authorize(context)
        self.gateway.shm.unregister(request.name or None)
        return pb.SystemSharedMemoryUnregisterResponse()

    CudaSharedMemoryStatus = _unimplemented("CUDA shared memory")
    CudaSharedMemoryRegister = _unimplemented("CUDA shared memory")
    CudaSharedMemoryUnregister = _unimplemented("CUDA shared memory")

    # ------------------------------------------------------ trace and log settings
    @rpc
    async def TraceSetting(self, request, context):
        model = check_model_name(request.model_name) if request.model_name else None
        tracing = self.dataplane.tracing
        if request.settings:
            self._authorize(context)
            # A field sent with no value clears it (tritonclient sends None that way).
            tracing.update({k: list(v.value) or None for k, v in request.settings.items()}, model)
        answer = pb.TraceSettingResponse()
        for name, value in tracing.settings_of(model).items():
            answer.settings[name].value.extend(value if isinstance(value, list) else [value])
        return answer

    @rpc
    async def LogSettings(self, request, context):
        logs = self.dataplane.logs
        if request.settings:
            self._authorize(context)
            logs.update({k: getattr(v, v.WhichOneof("parameter_choice")) if v.WhichOneof("parameter_choice")
                         else None for k, v in request.settings.items()})
        answer = pb.LogSettingsResponse()
        for name, value in logs.show().items():
            field = "bool_param" if isinstance(value, bool) else "uint32_param" if isinstance(value, int) \
                else "string_param"
            setattr(answer.settings[name], field, value)
        return answer

