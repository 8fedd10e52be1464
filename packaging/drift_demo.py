"""The loop with nothing counted by hand, over HTTP: drift triggers the fine-tune, shadow
evaluation and the golden set check the candidate, the sequential canary promotes it, and
a deliberately bad candidate is stopped before it serves.

    python packaging/drift_demo.py --workdir /tmp/tunegate-drift

A client streams upright digits, then rotated ones, labelling the answers it gets (by
request id) as a user who learns the truth later would. The gateway sees its inputs drift
from what version 1 was trained on, and once drift has lasted and enough labels are in,
its loop leader starts a job (Horovod, np=1 on this 2-core machine). The candidate is
replayed against captured traffic, the held-back labels and the golden set (upright
digits, ``golden.npz`` in the model's directory) before any user request reaches it, then
canaried with a sequential test on the labelled answers. Then the client stops, sends a
burst of upright digits with random labels as feedback and asks for another job: that
candidate fails the golden set in shadow evaluation and never serves. Prints the figures and writes ``drift_demo.png``:
accuracy, drift score and the canary's test statistic over time.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import example_repo  # noqa: E402
from loop_demo import MODEL, Gateway, _input, _meta, accuracy, rotate, send_feedback  # noqa: E402

GOLDEN_ROWS = 400


def build(workdir: Path) -> tuple[Path, Path]:
    """Version 1 (upright digits, with the drift reference in its manifest), its golden set
    and the gateway's settings: nothing but the drift trigger starts a job."""
    repo = workdir / "repo"
    x_train, _, y_train, _ = example_repo.digits_split()
    example_repo.main(["--repo", str(repo), "--name", MODEL])
    np.savez(repo / MODEL / "golden.npz", x=x_train[:GOLDEN_ROWS], label=y_train[:GOLDEN_ROWS])
    replay = workdir / "upright-replay.npz"
    np.savez(replay, x=x_train, y=y_train)
    config = workdir / "gateway.json"
    config.write_text(json.dumps({
        "poll_interval_seconds": 0.5, "access_log": False,
        "leader": {"poll_seconds": 0.5},
        "runtime": {"provider": "cpu", "intra_op_threads": 1},
        "loop": {"jobs_dir": str(workdir / "jobs")},
        "loop_models": {MODEL: {
            "trigger": "drift", "drift_threshold": 0.2, "drift_window_seconds": 20, "drift_sustain_seconds": 3,
            # The replay counts twice: the client's labels can outnumber it, and what version
            # 1 knew (upright digits) must be kept.
            "drift_min_labelled": 600, "np": 1, "data": ["feedback:", str(replay), str(replay)],
            "options": ["--epochs", "20", "--lr", "0.002"],
            "capture": True, "canary_fraction": 0.3, "canary_mde": 0.05, "min_labelled": 30,
            "canary_wait_for_labels": True, "canary_window_seconds": 240, "golden_max_drop": 0.01,
            "rollback_window_seconds": 0,
        }},
    }, indent=2))
    return repo, config


class Client(threading.Thread):
    """Sends unpinned requests of the current kind (upright or rotated) and labels each answer
    through the feedback route by its request id; counts failures and the answers' accuracy."""

    def __init__(self, gateway: Gateway, x: np.ndarray, y: np.ndarray) -> None:
        super().__init__(name="client", daemon=True)
        import tritonclient.http as triton

        self.gateway, self.client = gateway, triton.InferenceServerClient(gateway.url)
        self.x, self.y = x, y
        self.rotated = False
        self.stop = threading.Event()
        self.requests = self.failures = self.labelled = 0
        self.errors: list[str] = []
        self.answers: list[tuple[float, bool, str]] = []  # (time, correct, version)

    def run(self) -> None:
        rng = np.random.default_rng(1)
        while not self.stop.is_set():
            rows = rng.integers(0, len(self.x), size=4)
            x = rotate(self.x[rows]) if self.rotated else self.x[rows]
            rid = f"c{self.requests}"
            self.requests += 1
            try:
                result = self.client.infer(MODEL, [_input(x)], request_id=rid)
                predicted = result.as_numpy("probabilities").argmax(1)
                version = result.get_response()["model_version"]
                now = time.monotonic()
                self.answers += [(now, bool(p == t), version) for p, t in zip(predicted, self.y[rows])]
                status, body = self.gateway.json("POST", f"/v2/models/{MODEL}/feedback", {
                    "parameters": {"request_id": rid},
                    "inputs": [{"name": "label", "datatype": "INT64", "shape": [4], "data": self.y[rows].tolist()}]})
                if status != 200:
                    raise RuntimeError(f"label refused ({status}): {body}")
                self.labelled += 4
            except Exception as exc:  # any failure is what the demo must not see
                self.failures += 1
                self.errors.append(str(exc)[:200])
            time.sleep(0.02)  # a user's pace, not a load test: about 40 requests a second


class Monitor(threading.Thread):
    """Samples the drift score and the canary's test statistic for the figure."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(name="monitor", daemon=True)
        self.gateway, self.stop, self.samples = gateway, threading.Event(), []

    def run(self) -> None:
        while not self.stop.wait(0.25):
            meta = _meta(self.gateway)
            test = (meta.get("canary") or {}).get("test") or {}
            self.samples.append((time.monotonic(), (meta.get("drift") or {}).get("score"), test.get("llr"),
                                 (meta.get("canary") or {}).get("state")))


def run(workdir: Path, *, log=print) -> dict:
    import tritonclient.http as triton

    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    repo, config = build(workdir)
    x_train, x_test, y_train, y_test = example_repo.digits_split()
    gateway = Gateway(repo, config, workdir / "gateway.log")
    client, monitor = Client(gateway, x_train[GOLDEN_ROWS:], y_train[GOLDEN_ROWS:]), Monitor(gateway)
    try:
        http = triton.InferenceServerClient(gateway.url)
        before = {"upright": accuracy(http, x_test, y_test)[0], "rotated": accuracy(http, rotate(x_test), y_test)[0]}
        log(f"version 1: upright {before['upright']:.1%}, rotated {before['rotated']:.1%}")
        events = {"start": time.monotonic()}
        client.start()
        monitor.start()
        time.sleep(5)
        client.rotated = True
        events["rotated digits"] = time.monotonic()
        log(f"the client now sends rotated digits (drift score so far {_drift(gateway)})")
        job = gateway.wait(lambda: _meta(gateway).get("finetune_job"), "the drift trigger's job", 300)
        log(f"drift {_drift(gateway)} sustained with {client.labelled} labels: job {job} started")
        events["drift job"] = time.monotonic()
        good = _decided(gateway, job, log)
        events[f"v{good['version']} {good['state']}"] = time.monotonic()
        after = {"upright": accuracy(http, x_test, y_test)[0], "rotated": accuracy(http, rotate(x_test), y_test)[0]}
        log(f"version {good['version']}: upright {after['upright']:.1%}, rotated {after['rotated']:.1%}")

        # A bad candidate: the client stops; then feedback on upright digits with random labels
        # and a job asked for by hand (or the one drift started meanwhile: it trains on them too).
        client.stop.set()
        client.join(60)
        rng = np.random.default_rng(3)
        for start in range(0, 1600, 40):
            rows = rng.integers(0, len(x_train), size=40)
            send_feedback(gateway, x_train[rows], rng.integers(0, 10, size=40))
        status, bad_job = gateway.json("POST", f"/v2/models/{MODEL}/finetune")
        if status == 409:
            bad_job = {"job_id": _meta(gateway)["finetune_job"]}
        elif status != 202:
            raise RuntimeError(f"the second job was refused ({status}): {bad_job}")
        bad = _decided(gateway, bad_job["job_id"], log)
        events[f"v{bad['version']} stopped"] = time.monotonic()
        monitor.stop.set()
        final = http.get_model_metadata(MODEL)["versions"]
        return {"before": before, "after": after, "good": good, "bad": bad, "served_after": final,
                "requests": client.requests, "failures": client.failures, "errors": client.errors[:5],
                "seconds": round(time.monotonic() - started, 1), "answers": client.answers,
                "samples": monitor.samples, "t0": events["start"], "events": events}
    finally:
        client.stop.set()
        monitor.stop.set()
        gateway.stop()


def _drift(gateway: Gateway):
    return (_meta(gateway).get("drift") or {}).get("score")


def _decided(gateway: Gateway, job_id: str, log) -> dict:
    """Wait for the job, then for the decision on the version it published (shadow or canary)."""
    def ended():
        status, body = gateway.json("GET", f"/v2/models/{MODEL}/finetune/{job_id}")
        return body if status == 200 and body["state"] not in ("pending", "running") else None

    job = gateway.wait(ended, f"job {job_id}", 600)
    if job["state"] != "succeeded":
        raise RuntimeError(f"job {job_id} {job['state']}: {job['message']}\n" + "\n".join(job["log_tail"]))
    version = job["result"]["version"]
    log(f"job {job_id} published version {version}; shadow evaluation, then the canary")
    report = gateway.wait(lambda: (last := _meta(gateway).get("last_canary")) and last.get("version") == version
                          and last, f"the decision on version {version}", 300)
    log(f"version {version} {report['state']}: {report['reason']}")
    return report


def figure(summary: dict):
    """Accuracy of the client's answers, the drift score and the canary's test over time."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6), dpi=100, layout="constrained")
    acc_ax, drift_ax, test_ax = fig.subplots(3, 1, sharex=True)
    t0 = summary["t0"]
    answers = np.array([(t - t0, c) for t, c, _ in summary["answers"]]) if summary["answers"] else np.zeros((0, 2))
    if len(answers):
        window = 200
        rolling = np.convolve(answers[:, 1], np.ones(window) / window, mode="valid")
        acc_ax.plot(answers[window - 1:, 0], rolling)
    acc_ax.set_ylabel("client accuracy\n(last 200 answers)")
    acc_ax.set_ylim(0, 1.05)
    samples = [(t - t0, d, llr) for t, d, llr, _ in summary["samples"]]
    drift_ax.plot([s[0] for s in samples if s[1] is not None], [s[1] for s in samples if s[1] is not None])
    drift_ax.axhline(0.2, linestyle="--", color="grey")
    drift_ax.set_ylabel("drift score (PSI)")
    # The decision's own value too: a clear-cut canary can be decided between two samples.
    decided = [(summary["events"][f"v{r['version']} {r['state']}"] - t0, r["test"]["llr"])
               for r in (summary["good"],) if (r.get("test") or {}).get("llr") is not None
               and f"v{r['version']} {r['state']}" in summary.get("events", {})]
    test_ax.plot([s[0] for s in samples if s[2] is not None] + [d[0] for d in decided],
                 [s[2] for s in samples if s[2] is not None] + [d[1] for d in decided], "o")
    test_ax.axhline(0, color="grey", linewidth=0.5)
    test_ax.set_ylabel("canary log-\nlikelihood ratio")
    test_ax.set_xlabel("seconds")
    for name, when in summary.get("events", {}).items():
        if name != "start":
            for ax in (acc_ax, drift_ax, test_ax):
                ax.axvline(when - t0, color="tab:red", linewidth=0.8, alpha=0.6)
            acc_ax.annotate(name, (when - t0, 1.02), rotation=90, fontsize=7, va="bottom", ha="right",
                            annotation_clip=False)
    fig.suptitle(f"drift → fine-tune → shadow → canary: version {summary['good']['version']} "
                 f"{summary['good']['state']}, version {summary['bad']['version']} {summary['bad']['state']}")
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="drift-demo", help="where the repository, logs and PNG go")
    workdir = Path(parser.parse_args(argv).workdir).absolute()
    if (workdir / "repo").exists():
        parser.error(f"{workdir}/repo exists: give a fresh --workdir")
    summary = run(workdir)
    figure(summary).savefig(workdir / "drift_demo.png")
    b, a = summary["before"], summary["after"]
    print(f"\nrotated digits: {b['rotated']:.1%} -> {a['rotated']:.1%} ({(a['rotated'] - b['rotated']) * 100:+.1f} points)")
    print(f"upright digits: {b['upright']:.1%} -> {a['upright']:.1%} ({(a['upright'] - b['upright']) * 100:+.1f} points)")
    print(f"bad candidate {summary['bad']['version']}: {summary['bad']['state']} ({summary['bad']['reason'][:120]})")
    print(f"failed requests: {summary['failures']} of {summary['requests']}; whole run {summary['seconds']} s")
    print(f"figure: {workdir / 'drift_demo.png'}")
    return 0 if summary["failures"] == 0 and summary["good"]["state"] == "promoted" else 1


if __name__ == "__main__":
    sys.exit(main())
