"""The loop over a lifetime: K fine-tune cycles on the digits model, the input distribution
changing every cycle (and coming back to earlier ones), everything the loop writes measured
after each cycle.

    python bench/lifetime.py --cycles 12 --workdir /tmp/tunegate-lifetime

A real ``tunegate serve`` with the ``samples`` trigger (packaging/loop_demo.py's Gateway), a
client streaming unpinned requests throughout, and another streaming labelled feedback of
the cycle's distribution (``label_batch`` rows every half second): ``trigger_samples`` new rows
start a job when the stable version is worse on them; rows arriving during the job are its
candidate's held-back set; the candidate is shadowed, canaried and decided by the gateway
alone. The retention settings are set small (:data:`RETENTION`, printed) so they
bind by cycle 4. Printed per cycle: repository bytes and files by part, feedback rows,
versions on disk, job directories, job wall and training time, gateway RSS and fds,
/metrics lines, failed requests, jobs started/promoted/rejected, and the accuracy through the
gateway on held-out digits of every distribution seen so far; then the growth from cycle 4
to the last (flat: within 10%) and each distribution's drop from its best (forgetting).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "packaging"))

import example_repo  # noqa: E402
from loop_demo import MODEL, Gateway, Traffic, accuracy, send_feedback  # noqa: E402

DISTRIBUTIONS = {
    "upright": lambda d: d,
    "rot90": lambda d: np.rot90(d, 1, axes=(1, 2)),
    "rot180": lambda d: np.rot90(d, 2, axes=(1, 2)),
    "mirror": lambda d: d[:, :, ::-1],
    "inverted": lambda d: 1.0 - d,  # pixels are 0..1
}
# A change every cycle, and returns to earlier distributions (forgetting shows there).
SCHEDULE = ["rot90", "rot180", "mirror", "inverted", "rot90", "upright", "rot180", "mirror", "inverted",
            "rot90", "rot180", "upright"]

# Small enough to bind by cycle 4 (a few thousand rows, a handful of versions); production
# defaults are sized for a real volume (docs/guides/loop.md, "Retention").
RETENTION = {
    "feedback_max_rows": 1500, "feedback_recent_rows": 600, "replay_reservoir_rows": 900,
    "train_max_rows": 1500, "train_replay_fraction": 0.5, "keep_versions": 3, "keep_jobs": 3, "capture_max_requests": 2000,
}
RETENTION_INTERVAL_SECONDS = 5  # server-wide (the leader's retention pass), besides after each decision
LOOP = {
    "trigger": "samples", "np": 1, "data": ["feedback:"], "options": ["--epochs", "40", "--lr", "0.005"],
    "trigger_accuracy_target": 0.95,
    "capture": True, "canary_fraction": 0.3, "canary_window_requests": 80, "canary_min_requests": 20,
    "canary_wait_for_labels": False, "min_labelled": 20, "rollback_window_seconds": 2,
    "trigger_min_interval_seconds": 0, "trigger_backoff_seconds": 10,
    "max_p99_ratio": 20.0, "p99_slack_ms": 200.0, "golden_max_drop": 0.02,
}


def transform(name: str, x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(DISTRIBUTIONS[name](x.reshape(-1, 8, 8)).reshape(-1, 64), dtype=np.float32)


def write_config(workdir: Path, trigger_samples: int, overrides: dict) -> Path:
    config = workdir / "gateway.json"
    config.write_text(json.dumps({
        "poll_interval_seconds": 0.5, "access_log": False, "runtime": {"provider": "cpu", "intra_op_threads": 1},
        "leader": {"poll_seconds": 0.2},
        "loop": {"jobs_dir": str(workdir / "jobs"), "retention_interval_seconds": RETENTION_INTERVAL_SECONDS},
        "loop_models": {MODEL: {**LOOP, **RETENTION, "trigger_samples": trigger_samples, **overrides}},
    }, indent=2))
    return config


# ----------------------------------------------------------------- measuring
def parts(model_dir: Path) -> dict[str, tuple[int, int]]:
    """(bytes, files) per part of the model's directory."""
    out: dict[str, list[int]] = {}
    for path in model_dir.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        top = path.relative_to(model_dir).parts[0]
        part = "versions" if top.isdigit() else top.lstrip(".") if top.startswith(".") else "other"
        entry = out.setdefault(part, [0, 0])
        entry[0] += path.stat().st_size
        entry[1] += 1
    return {k: (v[0], v[1]) for k, v in sorted(out.items())}


def process_figures(pid: int) -> tuple[float, int]:
    rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS"))
    return rss / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def feedback_rows(model_dir: Path) -> dict[str, int]:
    from model_repo.feedback_compact import store_rows_by_kind

    return store_rows_by_kind(model_dir / ".feedback")


def job_figures(jobs_dir: Path, counted: set[str]) -> dict:
    """The jobs that ended since the last call (by id), with their wall and training time."""
    found = {"started": 0, "promoted": 0, "rejected": 0, "wall_s": 0.0, "train_s": 0.0}
    for job_dir in sorted(jobs_dir.glob("*")) if jobs_dir.is_dir() else []:
        if job_dir.name in counted or not (job_dir / "status.json").is_file():
            continue
        counted.add(job_dir.name)
        status = json.loads((job_dir / "status.json").read_text())
        found["started"] += 1
        summary = ((status.get("result") or {}).get("summary") or {})
        found["train_s"] += float((summary.get("timing") or {}).get("wall_s") or 0.0)
        found["wall_s"] += _seconds(status.get("started_at"), status.get("finished_at"))
    return found


def _seconds(start: str | None, end: str | None) -> float:
    import datetime as dt

    try:
        return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):
        return 0.0


# ----------------------------------------------------------------- one cycle
class Labeller(threading.Thread):
    """A client sending labelled rows of the current distribution at a steady pace, as users
    label what they see: through a job, its shadow phase and its canary alike."""

    def __init__(self, gateway: Gateway, batch: int, every: float) -> None:
        super().__init__(name="labeller", daemon=True)
        self.gateway, self.batch, self.every = gateway, batch, every
        self.stream: tuple[np.ndarray, np.ndarray] | None = None
        self.sent = 0
        self.stop = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        at = 0
        while not self.stop.wait(self.every):
            stream = self.stream
            if stream is None:
                continue
            x, y = stream
            take = np.arange(at, at + self.batch) % len(y)
            at += self.batch
            try:
                send_feedback(self.gateway, x[take], y[take])
                self.sent += self.batch
            except RuntimeError as exc:
                self.errors.append(str(exc)[:200])


def run_cycle(gateway: Gateway, labeller: Labeller, stream: tuple[np.ndarray, np.ndarray], *,
              patience: int, timeout: float) -> dict:
    """Labels of the cycle's distribution until a job starts and is decided, or the trigger
    says why it waits."""
    meta = lambda: _meta(gateway)  # noqa: E731
    before = meta()
    last_job = (before.get("last_finetune_job") or {}).get("job_id")
    last_canary = _decision_key(before.get("last_canary"))
    labeller.stream = stream
    first = labeller.sent
    # A reason to wait counts once the trigger has seen ``patience`` rows of this distribution.
    started = gateway.wait(lambda: _started(meta(), last_job, labeller.sent - first >= patience),
                           "a job, or a reason to wait", timeout)
    if started == "waiting":
        labeller.stream = None
        return {"job": None, "why": meta().get("finetune_waiting")}
    job = gateway.wait(lambda: _ended(meta(), last_job), "the job's end", timeout)
    decision = None
    if job.get("state") == "succeeded":
        decision = gateway.wait(lambda: (c := meta().get("last_canary")) and _decision_key(c) != last_canary and c,
                                "the canary's decision", timeout)
    labeller.stream = None
    return {"job": job, "decision": decision}


def _meta(gateway: Gateway) -> dict:
    status, body = gateway.json("GET", f"/v2/models/{MODEL}")
    return body.get("parameters", {}) if status == 200 else {}


def _decision_key(report: dict | None) -> tuple | None:
    return None if not report else (report.get("version"), report.get("state"))


def _ended(meta: dict, last_job: str | None) -> dict | None:
    """The last job's status once a job after ``last_job`` has ended."""
    last = meta.get("last_finetune_job") or {}
    return last if not meta.get("finetune_job") and last.get("job_id") not in (None, last_job) else None


def _started(meta: dict, last_job: str | None, patient: bool):
    if meta.get("finetune_job"):
        return "running"
    if (meta.get("last_finetune_job") or {}).get("job_id") not in (None, last_job):
        return "ended"
    return "waiting" if patient and meta.get("finetune_waiting") else None


# ----------------------------------------------------------------- the run
def run(workdir: Path, cycles: int, *, trigger_samples: int = 300, label_batch: int = 50, anchor: int = 0,
        golden: int = 0,
        overrides: dict | None = None, schedule: list[str] | None = None, log=print) -> list[dict]:
    import tritonclient.http as triton

    workdir.mkdir(parents=True, exist_ok=True)
    repo = workdir / "repo"
    example_repo.main(["--repo", str(repo), "--name", MODEL])
    x_train, x_test, y_train, y_test = example_repo.digits_split()
    pick = np.random.default_rng(1).permutation(len(y_train))
    if anchor:  # upright digits version 1 learnt from, which every job rehearses
        np.savez(repo / MODEL / "anchor.npz", x=x_train[pick[:anchor]], label=y_train[pick[:anchor]])
    if golden:
        # A disjoint golden set for shadow evaluation. Measured with 200 rows: every candidate
        # lost 4.5-10.5 points of upright accuracy on it (golden_max_drop 0.02), so with it
        # this model never adapts; without it the bench measures the forgetting itself.
        rows = pick[anchor:anchor + golden]
        np.savez(repo / MODEL / "golden.npz", x=x_train[rows], label=y_train[rows])
    config = write_config(workdir, trigger_samples, overrides or {})
    log(f"retention and loop settings: {json.dumps({**RETENTION, **(overrides or {})})}; "
        f"anchor set {anchor} rows, golden set {golden} rows")
    gateway = Gateway(repo, config, workdir / "gateway.log")
    traffic = Traffic(gateway.url, transform("upright", x_test))
    labeller = Labeller(gateway, batch=label_batch, every=0.5)
    rows, seen_jobs, seen = [], set(), ["upright"]
    best: dict[str, float] = {}
    rng = np.random.default_rng(0)
    try:
        client = triton.InferenceServerClient(gateway.url)
        traffic.start()
        labeller.start()
        for cycle, dist in enumerate((schedule or SCHEDULE)[:cycles], start=1):
            pick = rng.permutation(len(y_train))
            traffic.x = transform(dist, x_test)  # the live traffic shifts too
            began = time.monotonic()
            outcome = run_cycle(gateway, labeller, (transform(dist, x_train[pick]), y_train[pick]),
                                patience=2 * trigger_samples, timeout=900)
            seen = seen + [dist] if dist not in seen else seen
            time.sleep(LOOP["rollback_window_seconds"] + 1)  # the replaced version unloads
            acc = {d: accuracy(client, transform(d, x_test), y_test)[0] for d in seen}
            for d, a in acc.items():
                best[d] = max(best.get(d, 0.0), a)
            rss, fds = process_figures(gateway.process.pid)
            model_dir = repo / MODEL
            row = {"cycle": cycle, "dist": dist, "seconds": round(time.monotonic() - began, 1),
                   "parts": parts(model_dir), "feedback": feedback_rows(model_dir),
                   "versions": len([p for p in model_dir.iterdir() if p.name.isdigit()]),
                   "job_dirs": len(list((workdir / "jobs").glob("*"))) if (workdir / "jobs").is_dir() else 0,
                   "jobs": job_figures(workdir / "jobs", seen_jobs), "rss_mb": round(rss, 1), "fds": fds,
                   "metrics_lines": len(gateway.request("GET", "/metrics")[2].splitlines()),
                   "failed": traffic.failures + len(labeller.errors), "requests": traffic.requests,
                   "labels": labeller.sent, "accuracy": acc,
                   "forgetting": {d: round(best[d] - a, 4) for d, a in acc.items()},
                   "decision": (outcome.get("decision") or {}).get("state"),
                   "job_state": (outcome.get("job") or {}).get("state"), "why": outcome.get("why")}
            row["jobs"]["promoted"] = int(row["decision"] == "promoted")
            row["jobs"]["rejected"] = int(row["decision"] == "rolled_back" or row["job_state"] == "not_promoted")
            rows.append(row)
            log(_row_line(row))
    finally:
        traffic.stop.set()
        labeller.stop.set()
        gateway.stop()
    return rows


# ----------------------------------------------------------------- reporting
def series(rows: list[dict]) -> dict[str, list[float]]:
    """The per-cycle quantities that must stay flat."""
    return {
        "repo_bytes": [sum(b for b, _ in r["parts"].values()) for r in rows],
        "files": [sum(f for _, f in r["parts"].values()) for r in rows],
        "feedback_rows": [sum(r["feedback"].values()) for r in rows],
        "versions": [r["versions"] for r in rows],
        "job_dirs": [r["job_dirs"] for r in rows],
        "train_s": [r["jobs"]["train_s"] for r in rows],
        "rss_mb": [r["rss_mb"] for r in rows],
        "fds": [r["fds"] for r in rows],
        "metrics_lines": [r["metrics_lines"] for r in rows],
    }


def growth(rows: list[dict], start: int = 4) -> dict[str, float]:
    """Relative growth from cycle ``start`` to the last (0.1: 10%); training time over the
    cycles that ran a job."""
    out = {}
    for name, values in series(rows).items():
        values = values[start - 1:]
        if name == "train_s":
            values = [v for v in values if v > 0] or [0.0]
        base, last = values[0], values[-1]
        out[name] = (last - base) / base if base else float(last > 0)
    return out


def _row_line(row: dict) -> str:
    size = sum(b for b, _ in row["parts"].values()) / 1e6
    files = sum(f for _, f in row["parts"].values())
    acc = " ".join(f"{d} {a:.1%}" for d, a in row["accuracy"].items())
    return (f"cycle {row['cycle']:>2} {row['dist']:<8} {row['seconds']:>6.1f} s  repo {size:6.2f} MB {files:>5} files  "
            f"feedback {row['feedback']}  versions {row['versions']}  job dirs {row['job_dirs']}  "
            f"jobs {row['jobs']['started']}/{row['jobs']['promoted']}/{row['jobs']['rejected']}  "
            f"train {row['jobs']['train_s']:.1f} s  rss {row['rss_mb']} MB  fds {row['fds']}  "
            f"metrics {row['metrics_lines']}  failed {row['failed']}/{row['requests']}  [{acc}]"
            + (f"  waiting: {row['why']}" if row.get("why") else ""))


def report(rows: list[dict]) -> str:
    lines = ["", "per part (bytes/files) at the last cycle: " + json.dumps(rows[-1]["parts"]), "",
             "growth from cycle 4 to the last (target: within 10%):"]
    for name, value in growth(rows).items():
        lines.append(f"  {name:<14} {value:+.1%}  ({', '.join(str(round(v, 1)) for v in series(rows)[name])})")
    worst = {d: max(r["forgetting"].get(d, 0.0) for r in rows) for d in rows[-1]["accuracy"]}
    lines.append("forgetting, worst drop below each distribution's best (target: 3 points): "
                 + ", ".join(f"{d} {v * 100:.1f}" for d, v in worst.items()))
    adapted = [f"{r['dist']} {r['accuracy'][r['dist']]:.1%}" for r in rows]
    lines.append("each cycle's own distribution after the cycle (target: 90%): " + ", ".join(adapted))
    lines.append(f"failed requests: {rows[-1]['failed']} of {rows[-1]['requests']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=12)
    parser.add_argument("--trigger-samples", type=int, default=300)
    parser.add_argument("--anchor", type=int, default=200, help="upright rows in the anchor set jobs rehearse; 0: none")
    parser.add_argument("--golden", type=int, default=0, help="upright rows in a golden set shadow guards; 0: none")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="a per-model loop setting over the defaults, e.g. --set train_replay_fraction=0.5")
    parser.add_argument("--workdir", default="lifetime", help="a fresh folder for the repository and logs")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).absolute()
    if (workdir / "repo").exists():
        parser.error(f"{workdir}/repo exists: give a fresh --workdir")
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    rows = run(workdir, args.cycles, trigger_samples=args.trigger_samples, anchor=args.anchor,
               golden=args.golden, overrides=overrides)
    (workdir / "lifetime.json").write_text(json.dumps(rows, indent=2))
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
