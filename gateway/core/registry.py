"""Loaded models and versions: loading, hot reload, routing, draining.

``route()`` is the one place that picks the version a request runs on: a pinned version,
or what the :class:`Router` it is given says for an unpinned one (the loop's canary split),
else the newest ready version. Every change of the
serving set is one assignment on the event loop, so a request sees either the old set or
the new one. A retired version leaves routing at once, then is closed when its in-flight
requests have drained.

A version that fails to load never displaces the versions serving before it; the failure
and its reason show in the repository index until the next change to the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from model_repo import ModelConfig, Repository, RepoEvent
from model_repo import ModelNotFound as RepoModelNotFound
from model_repo import RepositoryError

from model_repo.canary_state import read_plan
from model_repo.lineage import lineage

from ..runtime.base import Runtime
from ..settings import Settings
from .batching import Batcher
from .errors import LoadError, ModelNotFound, ModelNotReady, ServerNotReady, VersionNotFound
from .routing import NEWEST, Router
from .signature import Signature
from .stats import StatsBook, VersionStats

log = logging.getLogger("tunegate.registry")

READY, LOADING, UNLOADING, UNAVAILABLE = "READY", "LOADING", "UNLOADING", "UNAVAILABLE"

RuntimeFactory = Callable[[Repository, str, int, ModelConfig, Settings], Runtime]


@dataclass(eq=False)
class ServedVersion:
    model: str
    version: int
    config: ModelConfig
    runtime: Runtime
    batcher: Batcher
    stats: VersionStats
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    lineage: dict = field(default_factory=dict)  # model_repo.lineage, refreshed as its manifest changes

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def signature(self) -> Signature:
        return self.runtime.signature

    def acquire(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def release(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()


@dataclass(eq=False)
class ModelRecord:
    name: str
    config: ModelConfig | None = None
    serving: dict[int, ServedVersion] = field(default_factory=dict)  # ascending versions
    states: dict[int, tuple[str, str]] = field(default_factory=dict)  # version -> (state, reason)
    error: str = ""  # model-level failure (e.g. unreadable config.pbtxt)
    unloaded: bool = False  # explicitly unloaded: the watcher leaves it alone
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Registry:
    def __init__(self, repo: Repository, settings: Settings, book: StatsBook,
                 runtime_factory: RuntimeFactory) -> None:
        self.repo = repo
        self.settings = settings
        self.book = book
        self._factory = runtime_factory
        self._records: dict[str, ModelRecord] = {}
        self._known: set[str] = set()  # models in the repository at the last look
        self._drains: set[asyncio.Task] = set()
        self._tasks: set[asyncio.Task] = set()
        self.started = asyncio.Event()  # the initial load has finished
        self.shutting_down = False
        self.router: Router = NEWEST  # the loop gives its canary split (use_router)

    def use_router(self, router: Router) -> None:
        self.router = router

    # -------------------------------------------------------------- routing
    @property
    def ready(self) -> bool:
        """Started, not shutting down, and (``strict_readiness``, Triton's rule) every model
        that should be loaded has a ready version: in poll and none mode every model in the
        repository, in explicit mode those asked for and not since unloaded."""
        if not self.started.is_set() or self.shutting_down:
            return False
        if not self.settings.strict_readiness:
            return True
        if self.settings.model_control != "explicit" and not self._known <= self._records.keys():
            return False
        return all(record.serving for record in self._records.values()
                   if self.settings.model_control != "explicit" or not record.unloaded)

    def failures(self) -> list[str]:
        """Why models that should serve do not (for ``exit_on_error`` and logs)."""
        return [f"model {record.name!r}: " + (self._why(record).lstrip("; ") or "not loaded")
                for record in self._records.values() if not record.serving and not record.unloaded]

    def route(self, model: str, version: str | int | None = None, *, split: bool = False,
              key: str | None = None) -> ServedVersion:
        """The version that serves this request; no I/O, no await. An unpinned request goes
        to the stable version, or (``split``: inference only) where the router's traffic
        split sends it (``key``: the client's id, for a split that sticks to clients)."""
        if self.shutting_down:
            raise ServerNotReady("the server is shutting down")
        record = self.record(model)
        if version in (None, ""):
            if not record.serving:
                raise ModelNotReady(f"model {model!r} has no ready version" + self._why(record))
            served = record.serving.get(self.router.pick(model, split, key))
            return served if served is not None else record.serving[next(reversed(record.serving))]
        number = _version_number(version)
        served = record.serving.get(number)
        if served is not None:
            return served
        state = record.states.get(number)
        if state is not None:
            raise ModelNotReady(f"version {number} of model {model!r} is {state[0]}"
                                + (f": {state[1]}" if state[1] else ""))
        raise VersionNotFound(f"model {model!r} has no version {number} loaded; loaded: "
                              f"{list(record.serving)}")

    @contextlib.contextmanager
    def lease(self, model: str, version: str | int | None = None, key: str | None = None) -> Iterator[ServedVersion]:
        """Route and hold the version until the request is answered (draining waits for it)."""
        served = self.route(model, version, split=True, key=key)
        served.acquire()
        try:
            yield served
        finally:
            served.release()

    def record(self, model: str) -> ModelRecord:
        record = self._records.get(model)
        if record is None:
            if model in self._known:
                raise ModelNotReady(f"model {model!r} is not loaded")
            raise ModelNotFound(f"unknown model {model!r} (POST /v2/repository/index lists the models)")
        return record

    def get(self, model: str) -> ModelRecord | None:
        """The model's record, or None (no 404/503: for callers that only look)."""
        return self._records.get(model)

    def records(self) -> list[ModelRecord]:
        return list(self._records.values())

    def serving(self) -> list[ServedVersion]:
        return [s for r in self._records.values() for s in r.serving.values()]

    @staticmethod
    def _why(record: ModelRecord) -> str:
        reasons = [f"version {v} {s}: {r}" for v, (s, r) in sorted(record.states.items()) if r]
        if record.error:
            reasons.insert(0, record.error)
        return ("; " + "; ".join(reasons)) if reasons else ""

    # -------------------------------------------------------------- loading
    async def start(self) -> None:
        """Initial load: every model unless control is explicit (then ``load_models``)."""
        try:
            models = await asyncio.to_thread(self.repo.list_models)
            self._known = set(models)
            if self.settings.model_control == "explicit":
                models = [m for m in self.settings.load_models if m in self._known]
            for model in models:
                with contextlib.suppress(LoadError, RepositoryError):
                    await self.reconcile(model)
        finally:
            self.started.set()

    async def load(self, model: str) -> None:
        """Explicit load (or reload): every available version, fresh; raises if any fails."""
        known = await asyncio.to_thread(self.repo.has_model, model)
        if not known:
            raise ModelNotFound(f"unknown model {model!r}")
        self._known.add(model)
        record = self._records.get(model)
        if record is not None:
            record.unloaded = False
        await self.reconcile(model, force=True)

    async def reconcile(self, model: str, *, force: bool = False) -> None:
        """Bring the model's serving set in line with the repository (load new versions,
        retire old ones). ``force`` reloads versions already serving (config changed)."""
        record = self._records.setdefault(model, ModelRecord(model))
        async with record.lock:
            if self.shutting_down:
                return
            try:
                config, wanted, canary, lineages = await asyncio.to_thread(self._read, model)
            except RepoModelNotFound:
                self._known.discard(model)
                self._retire(record, list(record.serving.values()))
                record.serving = {}
                self._records.pop(model, None)
                return
            except RepositoryError as exc:
                record.error = f"cannot read config: {exc}"
                log.error("model %s: %s; keeping %s serving", model, record.error, list(record.serving))
                raise LoadError(f"model {model!r}: {record.error}") from None
            record.error = ""
            loaded: dict[int, ServedVersion] = {}
            failures: dict[int, str] = {}
            for version in wanted:
                if version in record.serving and not force:
                    continue
                record.states[version] = (LOADING, "")
                try:
                    loaded[version] = await self._load_version(model, version, config)
                except Exception as exc:  # any load failure leaves the model serving what it had
                    reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                    failures[version] = reason
                    record.states[version] = (UNAVAILABLE, reason)
                    log.error("model %s version %s failed to load: %s", model, version, reason)
            serving = {v: s for v, s in record.serving.items() if v in wanted and v not in loaded}
            serving.update(loaded)
            if failures:  # keep what served before rather than serve less
                for v, s in record.serving.items():
                    serving.setdefault(v, s)
            retired = [s for v, s in record.serving.items() if serving.get(v) is not s]
            record.serving = dict(sorted(serving.items()))  # the atomic switch
            record.config = config
            for v, served in record.serving.items():
                served.lineage = lineages.get(v, served.lineage)
            for v in loaded:
                record.states[v] = (READY, "")
            for v in list(record.states):
                if v not in record.serving and v not in failures:
                    del record.states[v]
            self.router.plan(model, list(record.serving), canary)
            self._retire(record, retired)
            if loaded or retired:
                log.info("model %s: serving versions %s", model, list(record.serving))
            if failures and force:
                raise LoadError(f"model {model!r}: " + "; ".join(f"version {v}: {r}" for v, r in failures.items()))

    def _read(self, model: str) -> tuple[ModelConfig, list[int], int | None, dict[int, dict]]:
        """(config, versions to load, pending canary, their lineage); warm versions are loaded
        like serving ones (unpinned requests go to the newest, never to them)."""
        config = self.repo.read_config(model)
        loop = self.settings.loop_for(model)
        plan = read_plan(self.repo, model, config, loop.canary, loop.rollback_window_seconds)
        wanted = sorted(set(plan.serving) | set(plan.warm))
        # A hand-made version may have no manifest, hence no lineage.
        lineages = {v: lineage(m) for v in wanted if (m := plan.manifests.get(v)) is not None}
        return config, wanted, plan.canary, lineages

    async def _load_version(self, model: str, version: int, config: ModelConfig) -> ServedVersion:
        runtime = await asyncio.to_thread(self._factory, self.repo, model, version, config, self.settings)
        await runtime.load()
        stats = self.book.get(model, version)
        policy = runtime.batch_policy(self.settings.max_queue_size)
        output_names = runtime.signature.output_names

        async def run(inputs):
            return await runtime.predict(inputs, output_names)

        batcher = Batcher(run, policy, concurrency=runtime.concurrency, stats=stats,
                          name=f"model {model!r} version {version}")
        batcher.start()
        # runtime.config: a runtime may serve a config of its own (Triton's, auto-completed).
        return ServedVersion(model, version, runtime.config, runtime, batcher, stats)

    # ------------------------------------------------------------- unloading
    async def unload(self, model: str) -> None:
        """Explicit unload: leave routing now, return once drained and closed."""
        record = self.record(model)
        async with record.lock:
            record.unloaded = True
            retired = list(record.serving.values())
            record.serving = {}
            self.router.plan(model, [], None)
            record.states = {}
            tasks = self._retire(record, retired)
        if tasks:
            await asyncio.gather(*tasks)

    def _retire(self, record: ModelRecord, versions: list[ServedVersion]) -> list[asyncio.Task]:
        tasks = []
        for served in versions:
            task = asyncio.create_task(self._drain(served))
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
            tasks.append(task)
        return tasks

    async def _drain(self, served: ServedVersion) -> None:
        try:
            async with asyncio.timeout(self.settings.exit_timeout_seconds or None):
                await served.idle.wait()
        except TimeoutError:
            log.warning("model %s version %s: %d request(s) still in flight after %.0fs; closing anyway",
                        served.model, served.version, served.in_flight, self.settings.exit_timeout_seconds)
        await served.batcher.close()
        await served.runtime.unload()
        record = self._records.get(served.model)
        if record is None or (served.version not in record.serving and served.version not in record.states):
            self.book.retire(served.model, served.version)  # gone, not reloading: fold its series
        log.info("model %s version %s unloaded", served.model, served.version)

    # -------------------------------------------------------------- watching
    async def apply(self, events: list[RepoEvent]) -> None:
        """React to the repository watcher: reconcile each touched model (in the background,
        so one slow load does not hold up another model)."""
        forced: dict[str, bool] = {}
        for event in events:
            forced[event.model] = forced.get(event.model, False) or event.change == "config_changed"
            if event.change == "model_added":
                self._known.add(event.model)
        for model, force in forced.items():
            record = self._records.get(model)
            if record is not None and record.unloaded:
                continue
            if self.settings.model_control == "explicit" and record is None:
                continue
            self.spawn(self._reconcile_quietly(model, force))

    async def _reconcile_quietly(self, model: str, force: bool) -> None:
        with contextlib.suppress(LoadError):  # already logged and shown in the index
            await self.reconcile(model, force=force)

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ index
    def index(self, ready_only: bool = False) -> list[dict]:
        """Triton's repository index: every model, each version with its state and reason."""
        rows = []
        for model in sorted(self._known | self._records.keys()):
            record = self._records.get(model)
            entries = []
            if record is not None:
                states = {v: (READY, "") for v in record.serving}
                states.update({v: s for v, s in record.states.items() if v not in record.serving})
                entries = [{"name": model, "version": str(v), "state": s, "reason": r}
                           for v, (s, r) in sorted(states.items())]
                if not entries:
                    reason = record.error or ("unloaded" if record.unloaded else "")
                    entries = [{"name": model, "state": UNAVAILABLE, "reason": reason}]
            else:
                entries = [{"name": model, "state": UNAVAILABLE, "reason": "not loaded"}]
            rows.extend(e for e in entries if not ready_only or e["state"] == READY)
        return rows

    # ---------------------------------------------------------------- shutdown
    def begin_shutdown(self) -> None:
        """Stop routing new requests; let queued ones run without waiting for batches to fill."""
        self.shutting_down = True
        for served in self.serving():
            served.batcher.flush()

    async def close(self) -> None:
        self.begin_shutdown()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for record in self._records.values():
            self._retire(record, list(record.serving.values()))
            record.serving = {}
        if self._drains:
            await asyncio.gather(*self._drains, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Registry]:
        self.spawn(self.start())
        try:
            yield self
        finally:
            await self.close()


def _version_number(version: str | int) -> int:
    text = str(version)
    if not (text.isascii() and text.isdigit()) or text.startswith("0"):  # isdigit alone admits '²'
        raise VersionNotFound(f"invalid version {text[:32]!r}: expected a positive integer such as 1")
    return int(text)
