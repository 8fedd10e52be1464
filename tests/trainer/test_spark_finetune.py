"""``tunegate finetune --launcher spark`` on real Spark (local[2]) and real Horovod.

One SparkSession serves the module (it starts in seconds, the runs reuse it, as a
spark-submit driver would): the CLI runs in this process and finds it active. The
horovodrun run it is compared with is a real subprocess, as in test_horovod_runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from model_repo import Repository
from trainer.data import load_data
from trainer.spark_data import stage
from tunegate_cli import main

from .conftest import finetune, versions

pytestmark = pytest.mark.usefixtures("needs_horovod")


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (SparkSession.builder.master("local[2]").appName("tunegate-tests")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def digits_parquet(tmp_path_factory, digits) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, y = digits
    columns = {f"p{i}": x[:, i] for i in range(x.shape[1])}
    path = tmp_path_factory.mktemp("spark-data") / "digits.parquet"
    pq.write_table(pa.table({**columns, "label": y}), path, row_group_size=500)  # several Spark splits
    return path


def _spark_finetune(capsys, repo: Path, *args: str) -> tuple[int, dict | None, str]:
    capsys.readouterr()
    rc = main(["finetune", "--repo", str(repo), "--model", "digits", "--json", "--launcher", "spark",
               "--np", "2", *args])
    out, err = capsys.readouterr()
    try:
        return rc, json.loads(out) if out.strip() else None, out + err
    except json.JSONDecodeError:
        return rc, None, out + err


def _no_leftovers(repo: Path) -> None:
    assert not list((repo / "digits").glob(".spark-data/*")), "staged data left behind"
    assert not list((repo / "digits").glob(".finetune/spark-*")), "result file left behind"


def test_spark_run_from_parquet_matches_horovodrun_from_npz(spark, repo, served_repo_template, tmp_path,
                                                            digits_npz, digits_parquet, capsys):
    common = ("--epochs", "1", "--seed", "3")
    rc, on_spark, output = _spark_finetune(capsys, repo, "--data", str(digits_parquet), *common)
    assert rc == 0, output
    assert on_spark["status"] == "published" and versions(repo) == [1, 2]
    summary = on_spark["summary"]
    assert summary["world_size"] == 2 and len(set(summary["weights_checksums"])) == 1  # replicas identical
    assert "[0]<stdout>" in output and "epoch 1/1" in output  # rank 0's progress reached the driver
    _no_leftovers(repo)

    # The reference trains the same way under horovodrun; its impossible gate skips the
    # conversion and publish (the slow part), and the metrics that decide a gate still come back.
    other = tmp_path / "horovodrun-repo"
    shutil.copytree(served_repo_template, other)
    rc, on_horovodrun, output = finetune(other, "--model", "digits", "--data", str(digits_npz), *common,
                                         "--np", "2", "--hosts", "localhost:2", "--gate", "accuracy:+1.0")
    assert rc == 3, output
    reference = on_horovodrun["summary"]
    # Same rows in the same order: Spark's Parquet and the .npz are one dataset for the lineage.
    assert summary["data_digest"] == reference["data_digest"]
    assert summary["val_data_digest"] == reference["val_data_digest"]
    assert summary["before"] == reference["before"]
    # Same seed and shards; TensorFlow's threaded reductions differ in the last bits, which
    # an epoch of steps amplifies a little.
    assert summary["after"]["loss"] == pytest.approx(reference["after"]["loss"], rel=0.05)
    assert summary["after"]["accuracy"] == pytest.approx(reference["after"]["accuracy"], abs=0.05)
    assert summary["gate"]["passed"] and reference["after"]["loss"] <= reference["before"]["loss"]
    manifest = Repository(repo).verify("digits", 2)
    assert manifest.data_digest == reference["data_digest"] and manifest.parent_version == 1
    assert manifest.extra["training"]["world_size"] == 2


def test_a_spark_sql_table_stages_the_same_rows_as_the_npz(spark, digits_parquet, digits_npz, tmp_path):
    spark.read.parquet(str(digits_parquet)).createOrReplaceTempView("digits_feedback")
    specs, widths = stage(spark, ["digits_feedback"], features=None, label=None, into=tmp_path / "staged")
    assert widths == [("digits_feedback", 64)]
    assert load_data(specs).digest == load_data([str(digits_npz)]).digest


@pytest.mark.parametrize("case", ["missing_path", "missing_table", "missing_column", "table_missing_column",
                                  "text_column", "too_few_slots"])
def test_bad_data_fails_before_any_rank_starts(spark, repo, digits_parquet, tmp_path, capsys, case):
    spark.createDataFrame([(1.0, "a", 0)], "p0 double, note string, label long").createOrReplaceTempView("notes")
    data, extra, message = {
        "missing_path": (str(tmp_path / "nowhere.parquet"), (), "Spark cannot read it as Parquet data"),
        "missing_table": ("no_such_table", (), "Spark cannot read it as Spark SQL table"),
        "missing_column": (str(digits_parquet), ("--label", "target"), "no column named 'target'"),
        "table_missing_column": ("notes", ("--features", "p0,p1"), "no column named 'p1'"),
        "text_column": ("notes", (), "column 'note' holds string, not numbers"),
        "too_few_slots": (str(digits_parquet), ("--np", "3"), "--np 3 needs 3 task slots"),
    }[case]
    rc, outcome, output = _spark_finetune(capsys, repo, "--data", data, *extra)
    assert rc == 2, output
    assert message in outcome["message"], outcome
    assert "<stdout>" not in output and "<stderr>" not in output  # no rank ever ran
    assert versions(repo) == [1]
    _no_leftovers(repo)


def _kill_rank_once_training(repo: Path, stop: threading.Event) -> list[int]:
    """SIGKILL rank 1 once rank 0 has checkpointed an epoch (training is under way)."""
    killed: list[int] = []
    checkpoints = repo / "digits" / ".checkpoints"
    while not stop.is_set() and not killed:
        if checkpoints.is_dir() and any(checkpoints.iterdir()):
            for proc in psutil.Process().children(recursive=True):
                try:
                    if "gloo_exec_fn" in " ".join(proc.cmdline()) and proc.environ().get("HOROVOD_RANK") == "1":
                        proc.send_signal(signal.SIGKILL)
                        killed.append(proc.pid)
                except psutil.Error:
                    continue
        time.sleep(0.2)
    return killed


def test_a_rank_killed_mid_run_fails_the_job_and_publishes_nothing(spark, repo, digits_npz, capsys):
    stop = threading.Event()
    killed: list[int] = []
    killer = threading.Thread(target=lambda: killed.extend(_kill_rank_once_training(repo, stop)))
    killer.start()
    try:
        rc, outcome, output = _spark_finetune(capsys, repo, "--data", str(digits_npz), "--epochs", "200",
                                              "--batch-size", "8")
    finally:
        stop.set()
        killer.join()
    assert killed, output
    assert rc == 1, output
    assert outcome["status"] == "error" and "nothing was published" in outcome["message"]
    assert versions(repo) == [1]
    _no_leftovers(repo)
