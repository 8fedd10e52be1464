"""Labelled feedback: validated like an infer request, stored durably for the trainer.

A feedback request is a v2 inference request (decoded by a front end, over any protocol)
whose inputs are the model's inputs plus one more tensor, the labels (named ``label``, or
``parameters.label_tensor``), one label per row, checked against the model's label spec and
stored in its one form (``gateway.loop.labels``). Or it names a captured infer request
(``parameters.request_id``) and sends only the labels; then the request's inputs are
stored, and the labels also score the answer that request got (a canary's accuracy). The
request may have been captured by any gateway process or replica over the same repository
(``gateway.loop.capture``); it takes one label, claimed across processes before the record is
stored and released if storing fails, so a feedback that fails can be retried and a second
label is answered 409.

The record is appended to the model's feedback store (``model_repo.feedback``) and
fsynced before the answer: an acknowledged sample survives a crash. What the store's reader
would quarantine is counted by a background scan that each metrics scrape asks for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from model_repo.feedback import FeedbackScan, FeedbackWriter, feedback_dir

from ..core.errors import BadRequest, brief
from ..core.registry import Registry
from ..core.signature import Signature
from ..core.types import InferRequest, InputSpec
from ..settings import Settings
from .canary import CanaryController
from .capture import (CAPTURE_DIR, STALE_AFTER_SECONDS, Captured, CaptureStore, captured_feeds, check_instance,
                      predicted_classes)
from .capture_log import input_bytes
from .labels import LabelSpec, check_labels, expect_label, label_spec
from .leadership import process_identity
from .settings import LoopSettings

log = logging.getLogger("tunegate.feedback")


@dataclass
class FeedbackCounts:
    requests: int = 0
    samples: int = 0
    bytes: int = 0  # request bodies accepted
    labelled_answers: int = 0  # samples that scored a captured answer


class FeedbackService:
    def __init__(self, registry: Registry, settings: Settings, canary: CanaryController,
                 on_samples: Callable[[str, int], None], *, instance: str | None = None,
                 capture_stale_after: float = STALE_AFTER_SECONDS) -> None:
        self.registry = registry
        self.settings = settings
        self.canary = canary
        self.on_samples = on_samples
        self.counts: dict[str, FeedbackCounts] = {}
        # This process incarnation: its captures go to a directory of its own (capture.py),
        # so the id must differ between incarnations and name a directory (checked now).
        self.instance = check_instance(instance or process_identity())
        self.capture_stale_after = capture_stale_after
        self._writers: dict[str, FeedbackWriter] = {}
        self._captures: dict[str, CaptureStore] = {}
        # One thread owns every capture store: ordered, lock-free, off the event loop.
        self._capture_thread = ThreadPoolExecutor(1, thread_name_prefix="capture")
        self._pending_captures: set[asyncio.Future] = set()
        self._scans: dict[str, FeedbackScan] = {}
        self._scanning: set[str] = set()
        self._quarantined: dict[str, int] = {}  # written by the scan thread only
        self._closed = False
        self._scan_thread = ThreadPoolExecutor(1, thread_name_prefix="feedback-scan")

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
        if served is not None and not served.signature.batching:
            # A model that does not batch answered one example: store it as one row, as
            # feedback that sends its inputs does.
            feeds = {k: v[np.newaxis] for k, v in feeds.items()}
            outputs = {k: v[np.newaxis] for k, v in outputs.items()}
        item = Captured(version, feeds, predicted_classes(outputs, names),
                        input_bytes(feeds))
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
            store = CaptureStore(self.registry.repo.model_dir(model) / CAPTURE_DIR, instance=self.instance,
                                 max_requests=settings.capture_max_requests,
                                 max_bytes=int(settings.capture_max_bytes), stale_after=self.capture_stale_after)
            self._captures[model] = store
        return store

    # ------------------------------------------------------------- feedback
    async def replay_inputs(self, model: str, signature: Signature, limit: int) -> dict[str, np.ndarray] | None:
        """Up to ``limit`` recent captured requests' inputs, stacked as one batch per input
        (for shadow evaluation); None when nothing usable was captured here."""
        store = self._captures.get(model)
        if store is None:
            return None
        items = await asyncio.get_running_loop().run_in_executor(self._capture_thread, store.recent, limit)
        feeds = []
        for item in items:
            try:
                feeds.append(captured_feeds(signature, item))
            except BadRequest:
                continue  # captured for an older signature
        if not feeds:
            return None
        return {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}

    def input_spec(self, model: str) -> InputSpec:
        """What a feedback request's tensors may be, for the front end's decoder: the model's
        inputs, and the labels under the model's label spec (404/503, or 400 when feedback is
        off, before anything is decoded)."""
        settings = self._on(model)
        signature = self.registry.route(model).signature
        return _FeedbackInputs(signature, label_spec(signature, settings))

    def _on(self, model: str) -> LoopSettings:
        settings = self.settings.loop_for(model)
        if not settings.feedback:
            raise BadRequest(f"feedback is turned off for model {model!r}")
        return settings

    async def submit(self, model: str, request: InferRequest, nbytes: int) -> dict[str, Any]:
        """Store the labelled examples of a decoded feedback request (``nbytes``: its size)."""
        settings = self._on(model)
        # The stable version's signature: feedback is about the model, not one version.
        served = self.registry.route(model)
        spec = label_spec(served.signature, settings)
        label_name = request.parameters.get("label_tensor") or settings.label_tensor
        if not isinstance(label_name, str):
            raise BadRequest("parameters.label_tensor must be a string")
        label = next((t for t in request.inputs if t.name == label_name), None)
        if label is None:
            raise BadRequest(f"feedback needs the labels in a tensor named {label_name!r}")
        try:
            labels = check_labels(spec, label)
        except BadRequest as exc:
            raise BadRequest(f"{label_name!r}: {exc.message}") from None
        rest = [t for t in request.inputs if t.name != label_name]
        request_id = request.parameters.get("request_id")
        feeds = self._feeds(served.signature, rest, labels, label_name) if rest or request_id is None else None
        captured = None
        if request_id is None:
            await asyncio.to_thread(self._writer(model).append, feeds, labels)  # returns once fsynced
        else:
            if not isinstance(request_id, str):
                raise BadRequest("parameters.request_id must be a string")
            if not settings.capture:
                raise BadRequest(f"request capture is off for model {model!r}: send the inputs with the labels")
            # Find, check, claim, store, then forget, in order on the capture thread: a feedback
            # that fails leaves the capture for a retry, and of two for one id (through any
            # processes) one is stored and the other answered 409.
            captured = await asyncio.get_running_loop().run_in_executor(
                self._capture_thread, self._store_captured, model, self._capture_store(model, settings),
                self._writer(model), request_id, served.signature, feeds, labels, label_name)
        rows = int(labels.shape[0])
        counts = self.counts.setdefault(model, FeedbackCounts())
        counts.requests += 1
        counts.samples += rows
        counts.bytes += nbytes
        if captured is not None and captured.predicted is not None:
            truth = labels if spec.kind == "class" else labels.reshape(rows, -1).argmax(axis=1)
            correct = int(np.sum(captured.predicted == truth))
            counts.labelled_answers += rows
            self.canary.observe_labels(model, captured.version, correct, rows)
        self.on_samples(model, rows)
        answer: dict[str, Any] = {"model_name": model, "samples": rows}
        if captured is not None:
            answer["answered_by_version"] = str(captured.version)
        return answer

    @staticmethod
    def _feeds(signature: Signature, inputs: list, labels: np.ndarray, label_name: str) -> dict[str, np.ndarray]:
        feeds, rows = signature.check(InferRequest(inputs=inputs))
        if not signature.batching:  # a model that does not batch: one example
            feeds, rows = {k: v[np.newaxis] for k, v in feeds.items()}, 1
        if labels.shape[0] != rows:
            raise BadRequest(f"labels {label_name!r} have {labels.shape[0]} rows but the inputs have {rows}")
        return feeds

    @staticmethod
    def _store_captured(model: str, store: CaptureStore, writer: FeedbackWriter, request_id: str,
                        signature: Signature, feeds: dict[str, np.ndarray] | None, labels: np.ndarray,
                        label_name: str) -> Captured | None:
        """On the capture thread: store the labels with the captured (or given) inputs."""
        found = store.find(request_id)
        if found is not None:
            store.check_unlabelled(request_id, found)  # 409 before any other complaint
        captured = found.item if found is not None else None
        if captured is None and feeds is None:
            raise BadRequest(f"no captured request {request_id!r} for model {model!r} "
                             "(never captured, or forgotten)")
        if feeds is None:
            feeds = captured_feeds(signature, captured)
            rows = next(iter(feeds.values())).shape[0]
            if labels.shape[0] != rows:
                raise BadRequest(f"labels {label_name!r} have {labels.shape[0]} rows but the captured "
                                 f"request {request_id!r} has {rows}")
        if captured is None:
            writer.append(feeds, labels)  # inputs sent along, nothing captured to claim
            return None
        store.claim(request_id, found)  # Conflict when another process labelled it meanwhile
        try:
            writer.append(feeds, labels)  # returns once fsynced
        except BaseException:
            store.release(request_id, found)
            raise
        store.forget(request_id)
        return captured

    def _writer(self, model: str) -> FeedbackWriter:
        writer = self._writers.get(model)
        if writer is None:
            writer = self._writers[model] = FeedbackWriter(feedback_dir(self.registry.repo.root, model))
        return writer

    # ---------------------------------------------------------- quarantine
    def quarantined(self) -> dict[str, int]:
        """Per model, the records its store's reader quarantines, as of the latest finished
        scan; asks for a scan of what was appended since. Called at scrape time (the metric)."""
        if not self._closed:
            for record in self.registry.records():
                self._scan_soon(record.name)
        return dict(self._quarantined)

    def _scan_soon(self, model: str) -> None:
        # One scan at a time per model, on its own thread: a big store's first scan must not
        # hold up captures or the event loop. Later scans read only what was appended.
        if model in self._scanning:
            return
        self._scanning.add(model)
        self._scan_thread.submit(self._scan, model, self._scan_of(model))

    def _scan_of(self, model: str) -> FeedbackScan:
        scan = self._scans.get(model)
        if scan is None:
            scan = self._scans[model] = FeedbackScan(feedback_dir(self.registry.repo.root, model))
        return scan

    async def rows_after(self, model: str, after: int) -> tuple[int, int]:
        """(rows of the model's store numbered above ``after``, the store's last number), from
        the same incremental scan as the quarantine count, on the same thread."""
        scan = self._scan_of(model)

        def update() -> tuple[int, int]:
            self._scan(model, scan)
            return scan.rows_after(after), scan.last_sequence

        return await asyncio.get_running_loop().run_in_executor(self._scan_thread, update)

    def _scan(self, model: str, scan: FeedbackScan) -> None:
        try:
            found = scan.update()
            if found > self._quarantined.get(model, 0):
                log.warning("feedback store of %r: %d records quarantined (the trainer skips them): %s",
                            model, found, "; ".join(scan.reasons[-3:]))
            self._quarantined[model] = found
        except OSError as exc:
            log.warning("feedback store of %r cannot be scanned: %s", model, exc)
        finally:
            self._scanning.discard(model)

    async def close(self) -> None:
        self._closed = True
        if self._pending_captures:
            await asyncio.gather(*self._pending_captures, return_exceptions=True)
        for store in self._captures.values():
            await asyncio.get_running_loop().run_in_executor(self._capture_thread, store.close)
        self._capture_thread.shutdown(wait=True)
        # A scan of a big store may be under way: wait for it off the event loop.
        await asyncio.to_thread(lambda: self._scan_thread.shutdown(wait=True, cancel_futures=True))
        for writer in self._writers.values():
            await asyncio.to_thread(writer.close)


class _FeedbackInputs:
    """The codec's InputSpec for a feedback body: the model's inputs, and the labels (the one
    tensor that is not a model input), each checked before its data is decoded."""

    def __init__(self, signature: Signature, labels: LabelSpec) -> None:
        self.signature = signature
        self.labels = labels
        self.names = {t.name for t in signature.inputs}

    def check_input(self, name: str, datatype: str, shape: list[int]) -> None:
        if name in self.names:
            self.signature.check_input(name, datatype, shape)
        else:
            try:
                expect_label(self.labels, datatype, shape, None)
            except BadRequest as exc:
                raise BadRequest(f"unexpected input {brief(name)}: the model takes {sorted(self.names)} plus the "
                                 f"labels, and as labels it does not fit: {exc.message}") from None
