"""Labelled feedback: validated like an infer request, stored durably for the trainer.

A feedback body is a v2 inference request (JSON, or Triton's binary tensor extension)
whose inputs are the model's inputs plus one more tensor, the labels (named ``label``, or
``parameters.label_tensor``), one label per row. Or it names a captured infer request
(``parameters.request_id``) and sends only the labels; then the request's inputs are
stored, and the labels also score the answer that request got (a canary's accuracy).

The record is appended to the model's feedback store (``model_repo.feedback``) and
fsynced before the answer: an acknowledged sample survives a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from model_repo.feedback import FeedbackWriter, feedback_dir

from .canary import CanaryController
from .capture import CAPTURE_DIR, Captured, CaptureStore, predicted_classes
from .codec import InferRequest, decode_request
from .errors import BadRequest
from .registry import Registry
from .settings import Settings

log = logging.getLogger("tunegate.feedback")


@dataclass
class FeedbackCounts:
    requests: int = 0
    samples: int = 0
    bytes: int = 0  # request bodies accepted
    labelled_answers: int = 0  # samples that scored a captured answer


class FeedbackService:
    def __init__(self, registry: Registry, settings: Settings, canary: CanaryController,
                 on_samples: Callable[[str, int], None]) -> None:
        self.registry = registry
        self.settings = settings
        self.canary = canary
        self.on_samples = on_samples
        self.counts: dict[str, FeedbackCounts] = {}
        self._writers: dict[str, FeedbackWriter] = {}
        self._captures: dict[str, CaptureStore] = {}
        # One thread owns every capture store: ordered, lock-free, off the event loop.
        self._capture_thread = ThreadPoolExecutor(1, thread_name_prefix="capture")
        self._pending_captures: set[asyncio.Future] = set()

    # -------------------------------------------------------------- capture
    def observe_infer(self, model: str, version: int, ok: bool, elapsed_ns: int, request: InferRequest,
                      answer: tuple[dict, dict] | None, request_ids: list[str]) -> None:
        """A DataPlane observer: capture a successful request's inputs and answer."""
        if answer is None or not request_ids:
            return
        settings = self.settings.loop_for(model)
        if not settings.capture:
            return
        feeds, outputs = answer
        served = self.registry.record(model).serving.get(version)
        names = served.signature.output_names if served is not None else list(outputs)
        item = Captured(version, feeds, predicted_classes(outputs, names),
                        sum(a.nbytes for a in feeds.values()))
        store = self._capture_store(model, settings)
        future = asyncio.get_running_loop().run_in_executor(self._capture_thread, store.put, request_ids, item)
        self._pending_captures.add(future)
        future.add_done_callback(self._capture_done)

    def _capture_done(self, future: asyncio.Future) -> None:
        self._pending_captures.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("request capture failed: %s", future.exception())

    def _capture_store(self, model: str, settings) -> CaptureStore:
        store = self._captures.get(model)
        if store is None:
            store = CaptureStore(self.registry.repo.model_dir(model) / CAPTURE_DIR,
                                 max_requests=settings.capture_max_requests,
                                 max_bytes=int(settings.capture_max_bytes))
            self._captures[model] = store
        return store

    # ------------------------------------------------------------- feedback
    async def submit(self, model: str, body: bytes, header_length: int | None) -> dict[str, Any]:
        settings = self.settings.loop_for(model)
        if not settings.feedback:
            raise BadRequest(f"feedback is turned off for model {model!r}")
        # The stable version's signature: feedback is about the model, not one version.
        served = self.registry.route(model, split=False)
        if len(body) >= self.settings.codec_offload_bytes:
            request = await asyncio.to_thread(decode_request, body, header_length,
                                              max_elements=self.settings.max_elements)
        else:
            request = decode_request(body, header_length, max_elements=self.settings.max_elements)
        label_name = request.parameters.get("label_tensor") or settings.label_tensor
        if not isinstance(label_name, str):
            raise BadRequest("parameters.label_tensor must be a string")
        label = next((t for t in request.inputs if t.name == label_name), None)
        if label is None:
            raise BadRequest(f"feedback needs the labels in a tensor named {label_name!r}")
        labels = np.asarray(label.data)
        if labels.ndim == 0 or labels.dtype.hasobject or labels.dtype == np.bool_:
            raise BadRequest(f"labels {label_name!r} must be a numeric tensor with one row per example")
        rest = [t for t in request.inputs if t.name != label_name]
        request_id = request.parameters.get("request_id")
        captured = None
        if request_id is not None:
            if not isinstance(request_id, str):
                raise BadRequest("parameters.request_id must be a string")
            if not settings.capture:
                raise BadRequest(f"request capture is off for model {model!r}: send the inputs with the labels")
            captured = await asyncio.get_running_loop().run_in_executor(
                self._capture_thread, self._capture_store(model, settings).take, request_id)
            if captured is None and not rest:
                raise BadRequest(f"no captured request {request_id!r} for model {model!r} "
                                 "(never captured, already labelled, or forgotten)")
        if rest or captured is None:
            feeds, rows = served.signature.check(InferRequest(inputs=rest))
            if not served.signature.batching:  # a model that does not batch: one example
                feeds, rows = {k: v[np.newaxis] for k, v in feeds.items()}, 1
        else:
            feeds, rows = captured.inputs, captured.rows
        if labels.shape[0] != rows:
            raise BadRequest(f"labels {label_name!r} have {labels.shape[0]} rows but the inputs have {rows}")

        writer = self._writers.get(model)
        if writer is None:
            writer = self._writers[model] = FeedbackWriter(feedback_dir(self.registry.repo.root, model))
        await asyncio.to_thread(writer.append, feeds, labels)  # returns once fsynced

        counts = self.counts.setdefault(model, FeedbackCounts())
        counts.requests += 1
        counts.samples += rows
        counts.bytes += len(body)
        if captured is not None and captured.predicted is not None and np.issubdtype(labels.dtype, np.number):
            flat = labels.reshape(rows, -1)
            truth = flat[:, 0] if flat.shape[1] == 1 else np.argmax(flat, axis=1)  # class ids or one-hot
            correct = int(np.sum(captured.predicted == truth))
            counts.labelled_answers += rows
            self.canary.observe_labels(model, captured.version, correct, rows)
        self.on_samples(model, rows)
        answer: dict[str, Any] = {"model_name": model, "samples": rows}
        if captured is not None:
            answer["answered_by_version"] = str(captured.version)
        return answer

    async def close(self) -> None:
        if self._pending_captures:
            await asyncio.gather(*self._pending_captures, return_exceptions=True)
        for store in self._captures.values():
            await asyncio.get_running_loop().run_in_executor(self._capture_thread, store.close)
        self._capture_thread.shutdown(wait=True)
        for writer in self._writers.values():
            await asyncio.to_thread(writer.close)
