"""The whole loop on scikit-learn digits, over HTTP: serve a model trained on upright
digits, stream rotated digits with their labels as feedback, let the gateway start a
fine-tune job (Horovod, np=2), canary the new version and promote it, while a client keeps
sending inference requests throughout. Prints the accuracies before and after and writes a
PNG of accuracy per version.

    python packaging/loop_demo.py --workdir /tmp/tunegate-loop

The gateway is a real ``tunegate serve`` process; the client is tritonclient.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from model_repo.triton import free_port

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT / "packaging"))
import example_repo  # noqa: E402  (beside this file: version 1 and its train/held-out split)

MODEL = "digits"
FEEDBACK_SAMPLES = 800  # the job starts once this many rotated digits have come back labelled


def rotate(x: np.ndarray) -> np.ndarray:
    """The shift in the data: digits turned a quarter turn (the upright model gets ~8% right)."""
    return np.rot90(x.reshape(-1, 8, 8), 1, axes=(1, 2)).reshape(-1, 64).copy()


class Gateway:
    """A ``tunegate serve`` subprocess and plain HTTP to it."""

    def __init__(self, repo: Path, config: Path, log_path: Path) -> None:
        self.port = free_port()
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tunegate_cli", "serve", "--repo", str(repo), "--port", str(self.port), "--grpc-port", "0",
             "--config", str(config)], cwd=PROJECT_ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        self.wait(lambda: self.request("GET", "/v2/health/ready")[0] == 200, "gateway ready", 120)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        except OSError:
            return 0, {}, b""
        finally:
            conn.close()

    def json(self, method: str, path: str, doc=None) -> tuple[int, dict]:
        status, _, body = self.request(method, path, None if doc is None else json.dumps(doc).encode(),
                                       {"Content-Type": "application/json"})
        try:
            return status, json.loads(body) if body else {}
        except json.JSONDecodeError:
            return status, {"raw": body.decode(errors="replace")}

    def wait(self, predicate, what: str, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self.process.poll() is not None:
                raise RuntimeError(f"the gateway exited ({self.process.returncode}) while waiting for {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def _input(x: np.ndarray):
    import tritonclient.http as triton

    inp = triton.InferInput("pixels", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    return inp


def accuracy(client, x: np.ndarray, y: np.ndarray, version: str = "") -> tuple[float, set[str]]:
    correct, versions = 0, set()
    for start in range(0, len(x), 64):
        result = client.infer(MODEL, [_input(x[start:start + 64])], model_version=version)
        correct += int(np.sum(result.as_numpy("probabilities").argmax(1) == y[start:start + 64]))
        versions.add(result.get_response()["model_version"])
    return correct / len(x), versions


def send_feedback(gateway: Gateway, x: np.ndarray, y: np.ndarray) -> None:
    """Inputs and labels as binary tensors, framed by tritonclient."""
    import tritonclient.http as triton

    label = triton.InferInput("label", [len(y)], "INT64")
    label.set_data_from_numpy(y.astype(np.int64), binary_data=True)
    body, json_size = triton.InferenceServerClient.generate_request_body([_input(x), label])
    status, _, answer = gateway.request("POST", f"/v2/models/{MODEL}/feedback", body,
                                        {"Inference-Header-Content-Length": str(json_size)})
    if status != 200:
        raise RuntimeError(f"feedback refused ({status}): {answer[:300]!r}")


class Traffic(threading.Thread):
    """A client that keeps sending unpinned requests; every failure is counted."""

    def __init__(self, url: str, x: np.ndarray) -> None:
        super().__init__(name="traffic", daemon=True)
        import tritonclient.http as triton

        self.client = triton.InferenceServerClient(url)
        self.x = x
        self.stop = threading.Event()
        self.requests = self.failures = 0
        self.versions: dict[str, int] = {}
        self.errors: list[str] = []

    def run(self) -> None:
        rng = np.random.default_rng(1)
        while not self.stop.is_set():
            rows = rng.integers(0, len(self.x), size=4)
            self.requests += 1
            try:
                result = self.client.infer(MODEL, [_input(self.x[rows])])
                version = result.get_response()["model_version"]
                self.versions[version] = self.versions.get(version, 0) + 1
            except Exception as exc:  # any failed request is what the demo must not see
                self.failures += 1
                self.errors.append(str(exc)[:200])
            time.sleep(0.005)


def build(workdir: Path) -> tuple[Path, Path]:
    """The repository (version 1 trained on upright digits) and the gateway's settings."""
    repo = workdir / "repo"
    x_train, _, y_train, _ = example_repo.digits_split()
    example_repo.main(["--repo", str(repo), "--name", MODEL])
    # Replay data: what version 1 learnt from, mixed into every job so upright digits are kept.
    replay = workdir / "upright-replay.npz"
    np.savez(replay, x=x_train, y=y_train)
    config = workdir / "gateway.json"
    config.write_text(json.dumps({
        "poll_interval_seconds": 0.5,
        "access_log": False,
        "runtime": {"provider": "cpu", "intra_op_threads": 1},
        "loop": {"jobs_dir": str(workdir / "jobs")},
        "loop_models": {MODEL: {
            "trigger": "samples", "trigger_samples": FEEDBACK_SAMPLES, "np": 2,
            "data": ["feedback:", str(replay)],
            "options": ["--epochs", "20", "--lr", "0.002"],
            "capture": True, "canary_fraction": 0.2, "canary_window_requests": 60, "min_labelled": 20,
            "canary_wait_for_labels": True, "canary_window_seconds": 300,
        }},
    }, indent=2))
    return repo, config


def run_loop(workdir: Path, *, log=print) -> dict:
    import tritonclient.http as triton

    workdir.mkdir(parents=True, exist_ok=True)
    repo, config = build(workdir)
    x_train, x_test, y_train, y_test = example_repo.digits_split()
    held_out = {"upright": (x_test, y_test), "rotated": (rotate(x_test), y_test)}
    gateway = Gateway(repo, config, workdir / "gateway.log")
    traffic = Traffic(gateway.url, np.concatenate([x_test, rotate(x_test)]))
    try:
        client = triton.InferenceServerClient(gateway.url)
        first = client.get_model_metadata(MODEL)["versions"][-1]
        before = {name: accuracy(client, x, y)[0] for name, (x, y) in held_out.items()}
        log(f"version {first}: upright {before['upright']:.1%}, rotated {before['rotated']:.1%}")
        traffic.start()

        # 1. Labelled rotated digits come back as feedback; the 800th starts a job.
        stream_x, stream_y = rotate(x_train[:FEEDBACK_SAMPLES]), y_train[:FEEDBACK_SAMPLES]
        for start in range(0, FEEDBACK_SAMPLES, 40):
            send_feedback(gateway, stream_x[start:start + 40], stream_y[start:start + 40])
        log(f"sent {FEEDBACK_SAMPLES} labelled rotated digits as feedback")
        job_id = gateway.wait(lambda: (meta := _meta(gateway)).get("finetune_job")
                              or meta.get("last_finetune_job", {}).get("job_id"), "a job", 60)
        log(f"fine-tune job {job_id} started by the samples trigger")
        job = gateway.wait(lambda: _finished(gateway, job_id), f"job {job_id}", 900)
        log(f"job {job['state']}: {job['message']}")
        if job["state"] != "succeeded":
            raise RuntimeError(f"fine-tune job {job_id} {job['state']}: {job['message']}\n"
                               + "\n".join(job["log_tail"]))
        new = str(job["result"]["version"])

        # 2. The canary: its answers get labels too (by request id), so accuracy is compared.
        gateway.wait(lambda: (meta := _meta(gateway)).get("canary") or meta.get("last_canary"), "canary", 60)
        rng = np.random.default_rng(2)
        mixed_x = np.concatenate([rotate(x_train[FEEDBACK_SAMPLES:]), x_train[FEEDBACK_SAMPLES:]])
        mixed_y = np.concatenate([y_train[FEEDBACK_SAMPLES:], y_train[FEEDBACK_SAMPLES:]])
        i = 0
        while not _meta(gateway).get("last_canary"):
            rows = rng.integers(0, len(mixed_x), size=4)
            client.infer(MODEL, [_input(mixed_x[rows])], request_id=f"canary-{i}")
            status, body = gateway.json("POST", f"/v2/models/{MODEL}/feedback", {
                "parameters": {"request_id": f"canary-{i}"},
                "inputs": [{"name": "label", "datatype": "INT64", "shape": [4], "data": mixed_y[rows].tolist()}]})
            if status != 200:
                raise RuntimeError(f"label refused ({status}): {body}")
            i += 1
        canary = _meta(gateway)["last_canary"]
        log(f"canary {canary['version']} {canary['state']}: {canary['reason']}")
        if canary["state"] == "promoted":
            gateway.wait(lambda: client.get_model_metadata(MODEL)["versions"] == [new], "old version retired", 60)
        after = {name: accuracy(client, x, y) for name, (x, y) in held_out.items()}
        traffic.stop.set()
        traffic.join(60)
        served_by = sorted(set().union(*(v for _, v in after.values())))
        after_acc = {name: a for name, (a, _) in after.items()}
        log(f"version {new}: upright {after_acc['upright']:.1%}, rotated {after_acc['rotated']:.1%} "
            f"(served by {served_by})")
        log(f"client: {traffic.requests} requests during the loop, {traffic.failures} failed; "
            f"answered by versions {traffic.versions}")
        return {"versions": {first: before, new: after_acc}, "before": before, "after": after_acc,
                "served_after": served_by, "job": job, "canary": canary, "requests": traffic.requests,
                "failures": traffic.failures, "errors": traffic.errors[:5], "answered_by": traffic.versions,
                "metrics": gateway.request("GET", "/metrics")[2].decode()}
    finally:
        traffic.stop.set()
        gateway.stop()


def _meta(gateway: Gateway) -> dict:
    status, body = gateway.json("GET", f"/v2/models/{MODEL}")
    return body.get("parameters", {}) if status == 200 else {}


def _finished(gateway: Gateway, job_id: str) -> dict | None:
    status, body = gateway.json("GET", f"/v2/models/{MODEL}/finetune/{job_id}")
    return body if status == 200 and body["state"] not in ("pending", "running") else None


def plot(summary: dict, path: Path) -> Path:
    accuracy_figure(summary).savefig(path)
    return path


def accuracy_figure(summary: dict):
    """Held-out accuracy per version, upright and rotated digits side by side."""
    from matplotlib.figure import Figure  # not pyplot: no global figures, no backend to pick

    versions = list(summary["versions"])
    fig = Figure(figsize=(7, 4), dpi=100, layout="constrained")
    ax = fig.subplots()
    width = 0.38
    for k, name in enumerate(("upright", "rotated")):
        values = [summary["versions"][v][name] for v in versions]
        bars = ax.bar([i + (k - 0.5) * width for i in range(len(versions))], values, width, label=f"{name} digits")
        ax.bar_label(bars, labels=[f"{v:.1%}" for v in values], fontsize=8)
    ax.set_xticks(range(len(versions)), [f"version {v}" for v in versions])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("held-out accuracy over HTTP")
    ax.set_title("digits: before and after the feedback loop")
    # Beside the axes, not inside: any corner of the axes can hold a bar.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="loop-demo", help="where the repository, logs and PNG go")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).absolute()
    if (workdir / "repo").exists():
        parser.error(f"{workdir}/repo exists: give a fresh --workdir")
    summary = run_loop(workdir)
    png = plot(summary, workdir / "accuracy_per_version.png")
    (workdir / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "metrics"},
                                                     indent=2, default=str))
    b, a = summary["before"], summary["after"]
    print(f"\nrotated digits: {b['rotated']:.1%} -> {a['rotated']:.1%} ({(a['rotated'] - b['rotated']) * 100:+.1f} points)")
    print(f"upright digits: {b['upright']:.1%} -> {a['upright']:.1%} ({(a['upright'] - b['upright']) * 100:+.1f} points)")
    print(f"failed inference requests: {summary['failures']} of {summary['requests']}")
    print(f"accuracy per version: {png}")
    return 0 if summary["failures"] == 0 and summary["canary"]["state"] == "promoted" else 1


if __name__ == "__main__":
    sys.exit(main())
