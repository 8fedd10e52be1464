"""Canaries: a version published by a fine-tune job serves a fraction of traffic first.

Which versions serve is decided from the manifests (so a restart finds the same state):

- a version whose manifest ``status`` is ``rejected`` never serves again;
- a version published by a fine-tune job (its manifest has ``training``) whose manifest
  has no ``canary`` decision yet is a *pending canary*: it serves beside the stable set,
  taking ``canary_fraction`` of unpinned requests (``Registry.route``);
- promotion writes ``canary: {"state": "promoted", ...}`` into its manifest (it becomes
  an ordinary version, the newest, so the version policy retires the old stable);
  rollback writes ``status: "rejected"`` (the registry then unloads it).

The :class:`CanaryController` watches each canary's window: outcomes of the requests each
side answered (error rate, p99 latency) and labelled feedback on their answers
(accuracy). When the window closes it promotes or rolls back on the thresholds of
``LoopSettings``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The serving rule is the repository's (the CLI applies it too).
from model_repo.canary_state import CANARY, PROMOTED, REJECTED, ROLLED_BACK, is_pending

from model_repo import RepositoryError
from model_repo.ledger import model_baseline, trained_through

from ..core.errors import BadRequest
from . import manifests, shadow
from .canary_verdict import accuracy_test, verdict
from .rollback import undo_promotion
from .evidence import Side, evidence_dir, read_evidence, remove_evidence, write_evidence
from .sequential import TestState
from .settings import LoopSettings

if TYPE_CHECKING:
    from ..core.registry import Registry

log = logging.getLogger("tunegate.canary")

SHADOW = "shadow"  # loaded, evaluated off the request path, not routed yet


@dataclass(eq=False)
class CanaryState:
    model: str
    version: int
    stable: int
    fraction: float
    started: float = field(default_factory=time.time)  # wall clock: the version's publish time once read
    state: str = CANARY
    reason: str = ""
    canary_side: Side = field(default_factory=Side)  # every process's evidence summed
    stable_side: Side = field(default_factory=Side)
    mine: tuple[Side, Side] = field(default_factory=lambda: (Side(), Side()))  # this process's (canary, stable)
    processes: int = 1  # processes whose evidence the sums hold
    test: TestState | None = None  # the accuracy test as of the last look
    shadow: str | None = None  # the shadow phase's status; "insufficient": no promotion on requests alone
    dirty: bool = False  # ``mine`` changed since it was last written
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def live(self) -> bool:
        return self.state in (SHADOW, CANARY)

    def pick(self, key: str | None = None) -> int:
        """The version an unpinned request goes to: by a hash of ``key`` (a client's id: the same
        side every time, on every process), else at random; none to a candidate in shadow."""
        if self.state == SHADOW:
            return self.stable
        draw = random.random() if key is None else zlib.crc32(f"{self.version}:{key}".encode()) / 2**32
        return self.version if draw < self.fraction else self.stable

    def sides(self, version: int) -> tuple[Side, Side] | None:
        """(this process's, the summed) side ``version`` is on, if either."""
        if version == self.version:
            return self.mine[0], self.canary_side
        if version == self.stable:
            return self.mine[1], self.stable_side
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "stable_version": self.stable, "state": self.state,
                "fraction": self.fraction, "reason": self.reason,
                "elapsed_seconds": round(time.time() - self.started, 3), "processes": self.processes,
                "canary": self.canary_side.to_dict(), "stable": self.stable_side.to_dict(),
                "test": None if self.test is None else self.test.to_dict(), "shadow": self.shadow}


class CanaryController:
    """Feeds each live canary its evidence, shares it with the other processes, and (on the
    loop's leader only) closes its window and promotes or rolls back."""

    def __init__(self, registry: Registry, settings_for: Callable[[str], LoopSettings], *,
                 instance: str, is_leader: Callable[[], bool], poll_seconds: float) -> None:
        self.registry = registry
        self.settings_for = settings_for
        self.instance = instance  # names this process's evidence file
        # Recent captured inputs for shadow replay (the feedback service's, set by the wiring).
        self.replay: Callable[..., Awaitable[dict | None]] = _no_replay
        self.is_leader = is_leader
        self.poll_seconds = poll_seconds
        self.decisions: dict[tuple[str, str], int] = {}  # (model, promoted|rolled_back) -> count, decided here
        self.history: dict[str, list[dict[str, Any]]] = {}  # model -> finished canaries
        self._states: dict[str, CanaryState] = {}
        self._watchers: dict[str, asyncio.Task] = {}

    # ----------------------------------------------------- the registry's Router
    def plan(self, model: str, serving: list[int], canary: int | None) -> None:
        """Start (or end) the split to match the repository's plan: a canary needs itself and
        a stable version serving."""
        state = self._states.get(model)
        stable = [v for v in serving if v != canary]
        if canary is None or canary not in serving or not stable:
            if state is not None and state.live:
                state.state = "withdrawn"  # decided (here, by the leader or by hand) or left the policy
                state.changed.set()
            self._states.pop(model, None)
            return
        if state is not None and state.version == canary:
            state.stable = stable[-1]
            return
        settings = self.settings_for(model)
        state = self._states[model] = CanaryState(model, canary, stable[-1], settings.canary_fraction,
                                                  state=SHADOW if settings.shadow else CANARY)
        self.started(state)

    def pick(self, model: str, split: bool, key: str | None = None) -> int | None:
        state = self._states.get(model)
        if state is not None and state.state == ROLLED_BACK:
            return state.stable  # decided, not yet unloaded: never routed again meanwhile
        if state is None or not state.live:
            return None
        if not split:
            return state.stable
        return state.pick(key if self.settings_for(model).canary_sticky else None)

    # ------------------------------------------------------------- evidence
    def current(self, model: str) -> CanaryState | None:
        return self._states.get(model)

    def live(self, model: str) -> bool:
        state = self._states.get(model)
        return state is not None and state.live

    def observe(self, model: str, version: int, ok: bool, latency_ns: int) -> None:
        """One answered request (called by the data plane for every infer)."""
        state = self._states.get(model)
        sides = None if state is None or state.state != CANARY else state.sides(version)
        if sides is None:
            return
        for side in sides:
            side.requests += 1
            if ok:
                side.add_latency(latency_ns / 1e6)
            else:
                side.errors += 1
        state.dirty = True

    def observe_labels(self, model: str, version: int, correct: int, labelled: int) -> None:
        """Labelled feedback on answers ``version`` gave (from captured requests)."""
        state = self._states.get(model)
        sides = None if state is None or state.state != CANARY else state.sides(version)
        if sides is None:
            return
        for side in sides:
            side.labelled += labelled
            side.correct += correct
        state.dirty = True

    # ----------------------------------------------------------- lifecycle
    def started(self, state: CanaryState) -> None:
        """The registry put a new canary into service: share and watch its window."""
        log.info("model %s: version %s is a canary for %.0f%% of traffic (stable %s)", state.model,
                 state.version, state.fraction * 100, state.stable)
        old = self._watchers.pop(state.model, None)
        if old is not None:
            old.cancel()
        self._watchers[state.model] = self.registry.spawn(self._watch(state))

    async def _watch(self, state: CanaryState) -> None:
        repo = self.registry.repo
        directory = evidence_dir(repo.root, state.model, state.version)
        # The window opens when the version was published (or passed its shadow evaluation):
        # the same instant for every process, and for a new leader taking over half-way.
        state.started = await asyncio.to_thread(manifests.published_at, repo, state.model, state.version) or state.started
        if state.state == SHADOW:
            await self._through_shadow(state)
        while state.live:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.changed.wait(), self.poll_seconds)
            state.changed.clear()
            if not state.live:
                break
            await self._exchange(state, directory)
            settings = self.settings_for(state.model)
            state.test = accuracy_test(state.canary_side, state.stable_side, state.fraction, settings)
            outcome, why = verdict(state.canary_side, state.stable_side, fraction=state.fraction,
                                   elapsed=time.time() - state.started, settings=settings, test=state.test,
                                   evidence_needed=state.shadow == shadow.INSUFFICIENT)
            if outcome is not None and state.live and self.is_leader():
                await self._finish(state, outcome, why, manual=False)
        if state.state == "withdrawn":  # decided elsewhere: show what was decided
            report = await asyncio.to_thread(manifests.decision_report, repo, state.model, state.version)
            if report:
                self._remember(state.model, report)
                if report.get("state") == PROMOTED:
                    self._unload_warm_later(state.model)
                # A last write of ours may have landed after the decider removed the evidence.
                await asyncio.to_thread(remove_evidence, directory)

    async def _through_shadow(self, state: CanaryState) -> None:
        """The shadow phase: the leader evaluates the candidate and records the result in its
        manifest; every process takes it from there (traffic on a pass, unloaded on a fail)."""
        repo = self.registry.repo
        while state.live:
            report = await asyncio.to_thread(manifests.shadow_report, repo, state.model, state.version)
            if report is None and self.is_leader():
                report = await self._evaluate_shadow(state)
            if report is not None and shadow.status(report) != shadow.FAILED:
                state.shadow = shadow.status(report)
                state.state, state.started = CANARY, float(report.get("decided_at") or time.time())
                log.info("model %s version %s: shadow evaluation %s (%s); now a canary for %.0f%% of "
                         "traffic", state.model, state.version, state.shadow, report.get("reason"),
                         state.fraction * 100)
                return
            if report is not None and self.is_leader():
                await self._finish(state, ROLLED_BACK, f"shadow evaluation: {report.get('reason')}", manual=False)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.changed.wait(), self.poll_seconds)
            state.changed.clear()

    async def _evaluate_shadow(self, state: CanaryState) -> dict[str, Any] | None:
        """Run the shadow evaluation and record it (None: a version not loaded here yet, or a
        report another process recorded first)."""
        record = self.registry.get(state.model)
        stable = record.serving.get(state.stable) if record else None
        candidate = record.serving.get(state.version) if record else None
        if stable is None or candidate is None:
            return None
        settings, repo = self.settings_for(state.model), self.registry.repo
        names = [meta.name for meta in candidate.signature.inputs]
        replay = await self.replay(state.model, candidate.signature, settings.shadow_replay_requests)
        after = await asyncio.to_thread(_trained_through, repo, state.model, state.version)
        held_back = await asyncio.to_thread(shadow.load_held_back, repo.root, state.model, after, names)
        path = settings.golden_set or repo.model_dir(state.model) / "golden.npz"
        try:
            golden = await asyncio.to_thread(shadow.load_golden, path, names)
        except (OSError, ValueError) as exc:  # an unusable golden set must stop the candidate, loudly
            report = {"passed": False, "reason": f"golden set unusable: {exc}", "decided_at": time.time()}
        else:
            report = await shadow.evaluate(stable, candidate, settings, replay=replay, held_back=held_back,
                                           golden=golden)
        written = await asyncio.to_thread(repo.update_manifest_if, state.model, state.version,
                                          lambda m: is_pending(m) and "shadow" not in m.extra, shadow=report)
        return report if written is not None else None

    async def _exchange(self, state: CanaryState, directory: Path) -> None:
        """Write this process's counts if they changed; sum everyone's with our live ones."""
        mine = state.mine[0].copy(), state.mine[1].copy()
        write, state.dirty = state.dirty, False
        try:
            if write:
                await asyncio.to_thread(write_evidence, directory, self.instance, *mine)
            canary, stable, others = await asyncio.to_thread(read_evidence, directory, self.instance)
        except OSError as exc:  # a full or flaky volume: keep serving, try again next poll
            state.dirty = state.dirty or write
            log.warning("model %s: canary evidence not shared: %s", state.model, exc)
            return
        canary.merge(state.mine[0])
        stable.merge(state.mine[1])
        state.canary_side, state.stable_side, state.processes = canary, stable, others + 1

    async def promote(self, model: str) -> dict[str, Any]:
        state = self._live(model)
        await self._finish(state, PROMOTED, "promoted by hand", manual=True)
        return state.to_dict()

    async def rollback(self, model: str) -> dict[str, Any]:
        """Roll the live canary back, or else the latest promotion (while its predecessor is warm)."""
        state = self.current(model)
        if state is None or not state.live:
            self.registry.record(model)
            report = await undo_promotion(self.registry, model, self.settings_for(model).rollback_window_seconds,
                                          self.instance)
            self._remember(model, report)
            return report
        await self._finish(state, ROLLED_BACK, "rolled back by hand", manual=True)
        return state.to_dict()

    def _live(self, model: str) -> CanaryState:
        self.registry.record(model)  # 404/503 for an unknown or unloaded model
        state = self.current(model)
        if state is None or not state.live:
            raise BadRequest(f"model {model!r} has no canary in progress")
        return state

    async def _finish(self, state: CanaryState, outcome: str, why: str, *, manual: bool) -> None:
        if not state.live:
            return
        repo = self.registry.repo
        report = {**state.to_dict(), "state": outcome, "reason": why, "manual": manual,
                  "decided_by": self.instance,
                  "decided_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        changes: dict[str, Any] = {"canary": report} if outcome == PROMOTED else {"status": REJECTED, "canary": report}
        # The decision goes into the manifest first (every process's plan reads it, and a
        # restart must not put a rejected version back into service), and only while nobody
        # has decided: `tunegate models promote|rollback` or another process may have.
        written = await asyncio.to_thread(repo.update_manifest_if, state.model, state.version, is_pending,
                                          **changes)
        if written is None:
            if not state.live:
                return  # withdrawn meanwhile: the watcher's path shows what was decided
            existing = await asyncio.to_thread(manifests.decision, repo, state.model, state.version)
            state.state, state.reason = existing or (outcome, why)
            log.info("model %s version %s: canary already decided in its manifest (%s); deferring to it "
                     "rather than %s", state.model, state.version, state.state.replace("_", " "),
                     outcome.replace("_", " "))
            state.changed.set()
            await self.registry.reconcile(state.model)
            return
        # Ours, even if the repository watcher withdrew the canary while it was written.
        state.state, state.reason = outcome, why
        (log.warning if outcome == ROLLED_BACK else log.info)(
            "model %s version %s: canary %s: %s", state.model, state.version, outcome.replace("_", " "), why)
        self.decisions[(state.model, outcome)] = self.decisions.get((state.model, outcome), 0) + 1
        self._remember(state.model, report)
        state.changed.set()
        await asyncio.to_thread(remove_evidence, evidence_dir(repo.root, state.model, state.version))
        await self.registry.reconcile(state.model)
        if outcome == PROMOTED:
            self._unload_warm_later(state.model)

    def _unload_warm_later(self, model: str) -> None:
        """The replaced stable version stays loaded for the rollback window; then the plan
        drops it, which nothing in the repository changes to tell the watcher."""
        async def later() -> None:
            await asyncio.sleep(self.settings_for(model).rollback_window_seconds + 0.5)
            await self.registry.reconcile(model)

        if self.settings_for(model).rollback_window_seconds > 0:
            self.registry.spawn(later())

    def _remember(self, model: str, report: dict[str, Any]) -> None:
        history = self.history.setdefault(model, [])
        if not history or (history[-1].get("version"), history[-1].get("state")) != (report.get("version"),
                                                                                     report.get("state")):
            history.append(report)
            del history[:-20]

    def parameters(self, model: str) -> dict[str, Any]:
        """What the model's metadata shows under ``parameters``."""
        state = self.current(model)
        out: dict[str, Any] = {}
        if state is not None:
            out["canary"] = state.to_dict()
        if self.history.get(model):
            out["last_canary"] = self.history[model][-1]
        return out

    async def close(self) -> None:
        for task in self._watchers.values():
            task.cancel()
        self._watchers.clear()


async def _no_replay(model: str, signature: Any, limit: int) -> None:
    return None


def _trained_through(repo, model: str, version: int) -> int:
    """Rows after this are held back from ``version``: its own data snapshot's end, or (a
    candidate trained on files alone) the ledger's baseline, rows no version has trained on."""
    try:
        through = trained_through(repo.read_manifest(model, version))
    except RepositoryError:
        through = None
    return through if through is not None else model_baseline(repo, model)
