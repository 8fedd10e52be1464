"""Settings of the online-learning loop: feedback, request capture, fine-tune jobs, canaries.

``Settings.loop`` holds the defaults for every model; ``Settings.loop_models[name]``
overrides fields for one model (only the fields given are changed), e.g. in TOML::

    [loop]
    trigger = "samples"
    trigger_samples = 500

    [loop_models.digits]
    np = 2
    data = ["feedback:", "/data/digits-replay.npz"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, model_validator

MiB = 1 << 20


class LoopSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # ------------------------------------------------------------- feedback
    feedback: bool = True
    """Accept labelled feedback on ``POST /v2/models/{m}/feedback``."""

    label_tensor: str = "label"
    """Name of the tensor that carries the labels in a feedback request (a request may
    name another with ``parameters.label_tensor``)."""

    label_kind: Literal["auto", "class", "target"] = "auto"
    """What the labels are (docs/guides/loop.md, "Feedback"): ``class`` (one integer class id per row),
    ``target`` (a vector per row shaped like the model's output row, e.g. one-hot), or
    ``auto``: ``class`` when ``num_classes`` is set or the model's first output is a
    ``[batch, C]`` score matrix (C >= 2, floating), else ``target``. Labels are stored in one
    form per kind, so a model's feedback store never mixes shapes."""

    num_classes: int | None = Field(None, ge=1)
    """``class``: ids run from 0 to ``num_classes - 1`` (default: C of the output)."""

    label_shape: list[Annotated[int, Field(ge=1)]] | None = None
    """``target``: the shape of one row's label (default: the output's row; ``[]`` or ``[1]``
    for one value per row)."""

    capture: bool = False
    """Keep the inputs of recent infer requests so feedback can name a request id and send
    only the label."""

    capture_max_requests: int = Field(10_000, ge=1)
    """Captured requests kept per model; the oldest are forgotten first."""

    capture_max_bytes: ByteSize = ByteSize(64 * MiB)
    """Bytes of captured inputs kept per model, in memory and on disk."""

    feedback_max_rows: int = Field(1_000_000, ge=1)
    """Retention (``model_repo.feedback_compact``): rows a model's feedback store may hold
    before the leader compacts it — the newest rows kept whole, older ones thinned to the
    replay reservoir. Compaction goes down to 80% of this and of ``feedback_max_bytes``."""

    feedback_max_bytes: ByteSize = ByteSize(1 << 30)
    """Retention: bytes a model's feedback store may hold (1 GiB: about 1,700 rows of
    224×224×3 float32 images; millions of 64 floats)."""

    feedback_max_age_seconds: float = Field(30 * 86400.0, gt=0)
    """Retention: rows older than this (30 days) are no longer kept whole; they compete for
    the replay reservoir."""

    feedback_recent_rows: int = Field(200_000, ge=1)
    """Retention: at most this many of the newest rows are kept whole by a compaction."""

    replay_reservoir_rows: int = Field(50_000, ge=0)
    """Retention: the replay reservoir's size, a sample of every older row balanced over
    eras of the store's history and over classes, so every past distribution keeps a voice."""

    # ---------------------------------------------------------- fine-tuning
    trigger: Literal["manual", "samples", "schedule", "drift"] = "manual"
    """When a fine-tune job starts: ``manual`` (``POST /v2/models/{m}/finetune`` only),
    ``samples`` (also after ``trigger_samples`` new feedback samples), ``schedule`` (also
    every ``trigger_interval_seconds`` when new feedback has arrived), ``drift`` (also once
    the input drift score has stayed above ``drift_threshold`` for ``drift_sustain_seconds``
    and ``drift_min_labelled`` new feedback samples are in the store)."""

    trigger_samples: int = Field(1000, ge=1)
    """New feedback samples that start a job under the ``samples`` trigger."""

    trigger_interval_seconds: float = Field(3600.0, gt=0)
    """Period of the ``schedule`` trigger."""

    trigger_min_interval_seconds: float = Field(60.0, ge=0)
    """An automatic job starts no sooner than this after the last fine-tune ended (its
    version decided, or it published nothing), whoever ran it (``gateway.loop.jobs.value``)."""

    trigger_backoff_seconds: float = Field(300.0, ge=0)
    """After a fine-tune that did not help (rejected, not promoted, failed), the next
    automatic job waits this long, doubled for each further one in a row..."""

    trigger_backoff_max_seconds: float = Field(3600.0, ge=0)
    """...up to this."""

    trigger_min_accuracy_drop: float | None = Field(0.02, ge=0, le=1)
    """The ``samples`` and ``schedule`` triggers start a job only when the stable version is
    less accurate on the new labelled rows than it was on its own held-out data (its
    manifest's ``metrics.after.accuracy``) by at least this: evidence another job can help.
    None, targets instead of classes, or a version without that figure: new rows alone decide.
    (The ``drift`` trigger's evidence is the drift itself.)"""

    trigger_accuracy_target: float | None = Field(None, ge=0, le=1)
    """Also evidence: the stable version is less accurate than this on the new labelled rows
    (a version that was never good enough may still improve). None: only the drop counts."""

    launcher: Literal["local", "kubernetes", "spark"] = "local"
    """Where jobs run: ``local`` (a ``tunegate finetune`` subprocess under horovodrun),
    ``kubernetes`` (an Indexed Job made from ``job_template``, one pod per rank; the Helm
    chart's choice) or ``spark`` (a ``tunegate finetune --launcher spark`` subprocess, the
    Spark driver, whose ranks run as tasks on ``spark_master``). Server-wide: read from
    ``Settings.loop`` only. Environment: ``TUNEGATE_LOOP__LAUNCHER``."""

    spark_master: str | None = None
    """``spark``: the cluster (``spark://host:7077``, ``yarn``, ``k8s://...``, ``local[N]``).
    Server-wide. Environment: ``TUNEGATE_LOOP__SPARK_MASTER``."""

    spark_conf: dict[str, str] = {}
    """``spark``: Spark settings for the job's driver, e.g. ``{"spark.executor.memory" =
    "4g"}`` (docs/guides/finetune.md, "On Spark"). Server-wide."""

    job_template: Path | None = None
    """``kubernetes``: the fine-tune Job template (``job.yaml`` of the chart's
    ``<release>-tunegate-finetune`` ConfigMap, which the chart mounts into the gateway).
    Server-wide. Environment: ``TUNEGATE_LOOP__JOB_TEMPLATE``."""

    namespace: str | None = None
    """``kubernetes``: where jobs are created (default: the pod's own namespace, else
    ``default``). Server-wide. Environment: ``TUNEGATE_LOOP__NAMESPACE``."""

    jobs_dir: Path | None = None
    """Job logs and outcomes (default ``<repo>/.jobs``). Server-wide."""

    program: list[str] | None = None
    """Command that runs ``tunegate`` (default: this interpreter with ``-m tunegate_cli``).
    Server-wide."""

    np: int | None = Field(None, ge=1)
    """Ranks of a job (default: the trainer's, one per core)."""

    data: list[str] = ["feedback:"]
    """``tunegate finetune --data`` sources: ``feedback:`` is the model's feedback store;
    add replay data (files) here so the model keeps what it knew."""

    options: list[str] = []
    """Further ``tunegate finetune`` flags, e.g. ``["--epochs", "10"]``."""

    train_max_rows: int = Field(20_000, ge=0)
    """Rows a job reads of the model's feedback store (``tunegate finetune --max-rows``):
    rows since its base version's data snapshot, a replay sample of older rows and the golden
    set, so job time stays flat as the store ages. 0: every row."""

    train_replay_fraction: float = Field(0.3, ge=0, lt=1)
    """Share of a job's rows that rehearse older data (``--replay-fraction``): the replay
    sample and the golden set."""

    # ---------------------------------------------------------------- drift
    drift: bool = True
    """Watch the inputs for drift from those the stable version was trained or converted on
    (when its manifest has an ``input_summary``): ``parameters.drift`` in the model's
    metadata and ``tunegate_drift_*`` metrics (docs/guides/loop.md, "Drift")."""

    drift_threshold: float = Field(0.2, gt=0)
    """Drift score (the largest per-feature PSI over the window) above which inputs have
    drifted: < 0.1 is stable, > 0.2 a significant shift."""

    drift_window_seconds: float = Field(600.0, gt=0)
    """The live inputs compared: those sampled over this long (a sliding window)."""

    drift_sustain_seconds: float = Field(60.0, ge=0)
    """``drift`` trigger: how long the score must stay above ``drift_threshold``..."""

    drift_min_labelled: int = Field(100, ge=1)
    """...and how many new feedback samples must be in the store, before a job starts."""

    # --------------------------------------------------------------- canary
    canary: bool = True
    """Serve a version published by a fine-tune job to a fraction of traffic first; when
    off, it takes all traffic at once (the previous behaviour of hot reload)."""

    canary_fraction: float = Field(0.1, gt=0, le=1)
    """Share of unpinned requests the canary serves."""

    canary_window_requests: int = Field(200, ge=1)
    """With no labelled answers to compare (and ``canary_wait_for_labels`` off), the canary
    is promoted once it has answered this many requests within the guards."""

    canary_window_seconds: float | None = Field(None, gt=0)
    """A time cap from the version's publication: an undecided accuracy test is then
    truncated (promoted when the evidence leans towards "as accurate", else rolled back),
    once the canary has answered at least ``canary_min_requests``."""

    canary_min_requests: int = Field(20, ge=1)
    """Fewest canary answers before the guards and any promotion apply."""

    canary_wait_for_labels: bool = False
    """Never promote on the request window alone: wait for the accuracy test (or the time cap)."""

    canary_alpha: float = Field(0.05, gt=0, lt=0.5)
    """The accuracy test's chance of rolling back a canary that is as accurate as the stable
    version (docs/guides/loop.md, "Canary")."""

    canary_beta: float = Field(0.1, gt=0, lt=0.5)
    """Its chance of promoting a canary that is less accurate by ``canary_mde``."""

    canary_mde: float = Field(0.05, gt=0, lt=1)
    """The smallest accuracy drop the test is built to catch (absolute: 0.05 = 5 points)."""

    canary_sticky: bool = True
    """A request carrying ``parameters.client_id`` goes to the same side every time (a hash of
    the id); others are split at random."""

    max_error_rate_increase: float = Field(0.01, ge=0)
    """Guard: rollback when the canary's error rate exceeds the stable version's by more."""

    canary_latency_samples: int = Field(100, ge=1)
    """Guard: the p99 latencies are compared once each side has this many successful answers."""

    max_p99_ratio: float = Field(3.0, ge=1)
    """Guard: rollback when the canary's p99 latency exceeds the stable's times this ratio..."""

    p99_slack_ms: float = Field(50.0, ge=0)
    """...and also exceeds it by more than this (small absolute latencies are noisy)."""

    min_labelled: int = Field(20, ge=1)
    """Labelled answers each side needs before the accuracy test may decide."""

    rollback_window_seconds: float = Field(300.0, ge=0)
    """After a promotion the stable version it replaced stays loaded this long, so a rollback
    (``POST .../canary/rollback``) switches back at once, with nothing to load. 0: unloaded
    at once."""

    # --------------------------------------------------- shadow and golden set
    shadow: bool = True
    """Evaluate a fine-tuned version off the request path before any user request reaches it
    (docs/guides/loop.md, "Shadow evaluation"): replayed captures, held-back labels, the golden set."""

    shadow_replay_requests: int = Field(1000, ge=0)
    """Recent captured requests replayed through the candidate and the stable version."""

    shadow_min_replay: int = Field(20, ge=1)
    """Replayed requests the replay check needs to count as evidence (fewer: ``insufficient``)."""

    shadow_max_disagreement: float | None = Field(None, ge=0, le=1)
    """Fail a candidate that predicts another class than the stable version on more than this
    share of replayed requests (None: reported only; a fine-tune meant to change answers
    would fail a tight bound)."""

    shadow_max_accuracy_drop: float = Field(0.02, ge=0)
    """Fail a candidate less accurate than the stable version by more than this on feedback
    rows numbered after its job's data snapshot (at least ``min_labelled`` rows)."""

    golden_set: Path | None = None
    """The model's regression set (default ``<repo>/<model>/golden.npz`` when it exists)."""

    golden_max_drop: float = Field(0.01, ge=0)
    """Fail a candidate that loses more than this accuracy on the golden set."""

    # ------------------------------------------------------------ retention
    keep_versions: int = Field(10, ge=0)
    """Decided versions kept on disk besides those that must stay (the stable ones, the canary,
    the warm rollback version, a running job's base); older ones are removed by the leader's
    retention duty, their lineage kept in ``<model>/.ledger/lineage.jsonl``."""

    keep_jobs: int = Field(20, ge=0)
    """Finished fine-tune job directories kept per model (``jobs_dir``; running ones always)."""

    retention_stale_seconds: float = Field(3600.0, gt=0)
    """Files of processes silent this long are removed: drift counts, capture directories,
    unanswered leader requests."""

    retention_interval_seconds: float = Field(600.0, gt=0)
    """How often the leader applies retention (and measures disk use for
    ``tunegate_repository_bytes``); it also runs after each decided canary. Server-wide."""

    @model_validator(mode="after")
    def _one_label_kind(self) -> LoopSettings:
        if self.num_classes is not None and (self.label_shape is not None or self.label_kind == "target"):
            raise ValueError("num_classes is for class labels: it cannot go with label_shape or "
                             "label_kind = 'target'")
        if self.label_shape is not None and self.label_kind == "class":
            raise ValueError("label_shape is for target labels: it cannot go with label_kind = 'class'")
        return self

    @model_validator(mode="after")
    def _kubernetes_needs_a_template(self) -> LoopSettings:
        # Fail when the settings load, not when the first job starts hours later.
        if self.launcher == "kubernetes" and self.job_template is None:
            raise ValueError("loop.launcher = 'kubernetes' needs loop.job_template (TUNEGATE_LOOP__JOB_TEMPLATE)")
        if self.launcher == "spark" and not self.spark_master:
            raise ValueError("loop.launcher = 'spark' needs loop.spark_master (TUNEGATE_LOOP__SPARK_MASTER)")
        return self


class LeaderSettings(BaseModel):
    """How the one process that runs the loop is elected (server-wide; docs/guides/scale-out.md).
    Every worker and replica over one repository campaigns; the leader runs fine-tune
    triggers and launches and decides canaries, on the evidence every process writes."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["file", "kubernetes"] = "file"
    """``file``: an exclusive lock on ``lock_file`` (one host; the lock dies with its
    process). ``kubernetes``: a ``coordination.k8s.io/v1`` Lease (the Helm chart's choice).
    Environment: ``TUNEGATE_LEADER__BACKEND``."""

    lock_file: Path | None = None
    """``file``: the lock (default ``<repo>/.loop/leader.lock``)."""

    lease_name: str = "tunegate-loop"
    """``kubernetes``: the Lease's name (the chart sets ``<release>-tunegate-loop``)."""

    namespace: str | None = None
    """``kubernetes``: the Lease's namespace (default: the pod's own, else ``default``)."""

    lease_seconds: int = Field(15, ge=2)
    """``kubernetes``: how long a Lease holds without renewal; a dead leader is replaced
    within it."""

    identity: str | None = None
    """This process's name in the election and on its evidence and capture files (default:
    ``POD_NAME``, else host and pid); a random tail is always added."""

    retry_seconds: float = Field(1.0, gt=0)
    """How often a follower tries to become leader (and a Lease leader renews)."""

    poll_seconds: float = Field(1.0, gt=0)
    """How often each process shares its canary evidence and the leader looks at the loop's
    state (feedback counts, job requests, canary windows)."""

    request_timeout_seconds: float = Field(15.0, gt=0)
    """How long a control call that only the leader can carry out (start or cancel a
    fine-tune job) waits for the leader's answer before it is answered 503."""

