"""``tunegate finetune --launcher spark``: the job's ranks as Spark tasks (``horovod.spark.run``).

The driver (this process, or the one ``spark-submit`` started) checks what it can before
any rank starts (data files, Spark tables and columns, task slots), stages Spark data
(:mod:`trainer.spark_data`), then runs :func:`trainer.spark_rank.run_rank` in ``--np``
tasks at once with Gloo. Rank 0 writes the outcome to the shared repository
(``model_repo.jobs.result_path``), where the driver reads it whatever Spark says, so a
rank lost after rank 0 published changes nothing, and a rank lost before fails the job
with nothing published (Horovod's allreduce fails every other rank).

The repository must be visible at ``--repo`` on the driver and on every executor (a shared
mount), as it is for horovodrun across hosts.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import uuid

from model_repo.jobs import result_path

from .errors import DataError, TrainerError
from .launcher import check_data_paths, outcome
from .options import to_argv
from .preflight import check_data, check_fits
from .spark_data import remove_staged, spark_source, stage, staging_dir

# Ranks inherit the executor's environment; these only quieten TensorFlow's start-up.
RANK_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--launcher", choices=["horovodrun", "spark"], default="horovodrun",
                       help="spark: run the ranks as Spark tasks (horovod.spark.run); --data may then "
                            "name Parquet paths Spark reads (hdfs://, s3a://...) or Spark SQL tables")
    group.add_argument("--spark-master", metavar="URL",
                       help="spark://host:7077, yarn, k8s://..., local[N] (default: spark-submit's, "
                            "else local[--np])")
    group.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                       help="a Spark setting, e.g. spark.executor.memory=4g (repeatable)")


def parse_conf(pairs: list[str]) -> dict[str, str]:
    conf = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise DataError(f"--spark-conf {pair!r}: expected KEY=VALUE")
        conf[key.strip()] = value
    return conf


def check_args(args: argparse.Namespace) -> None:
    """What horovodrun takes and Spark does not: Spark decides the hosts."""
    for flag, given in (("--hosts", args.hosts), ("--elastic", args.elastic), ("--submit", args.submit)):
        if given:
            raise DataError(f"{flag} is for horovodrun or Kubernetes; with --launcher spark the "
                            "cluster (--spark-master) places the ranks")


def session(master: str | None, conf: dict[str, str], np_: int | None, app: str):
    """The active SparkSession (spark-submit's, or a test's), else a new one."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    master = master or f"local[{np_ or 1}]"
    if master.startswith("local"):
        # Spark's Python workers default to `python3` on PATH, which need not have tunegate.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName(app).config("spark.ui.showConsoleProgress", "false")
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        return builder.getOrCreate(), True
    except Exception as exc:  # no Java, a bad master URL: pyspark raises several kinds
        raise TrainerError(f"cannot start Spark (master {master}): {str(exc).strip().splitlines()[0]}; "
                           "Spark 4 needs Java 17 or later (Debian: openjdk-17-jre-headless)") from None


def ranks(spark, np_: int | None) -> int:
    sc = spark.sparkContext
    n = np_ or sc.defaultParallelism
    if sc.master.startswith("local") and n > sc.defaultParallelism:
        # Every rank is a task running at once: with fewer slots the job would wait forever.
        raise DataError(f"--np {n} needs {n} task slots at once; Spark master {sc.master} has "
                        f"{sc.defaultParallelism} (use local[{n}])")
    return n


def preflight(args: argparse.Namespace, model_input: tuple[int, ...] | None) -> dict[str, str]:
    """What can be checked before Spark starts (the flags, local data files); the Spark conf."""
    check_args(args)
    conf = parse_conf(args.spark_conf)
    local = [s for s in [*args.data, *(args.val_data or [])] if spark_source(s) is None]
    check_data_paths(local)
    check_data(local, features=args.features, label=args.label, model=args.model, model_input=model_input)
    return conf


def launch_spark(args: argparse.Namespace, *, model_input: tuple[int, ...] | None, conf: dict[str, str],
                 echo=sys.stdout) -> dict:
    """Run the job on Spark (after :func:`preflight`); return rank 0's result, or raise the
    error it reported."""
    spark, owned = session(args.spark_master, conf, args.np, f"tunegate-finetune-{args.model}")
    job = f"spark-{uuid.uuid4().hex[:12]}"
    staged_at = staging_dir(args.repo, args.model, job)
    result_file = result_path(args.repo, args.model, job)
    try:
        n = ranks(spark, args.np)
        data, widths = stage(spark, args.data, features=args.features, label=args.label, into=staged_at)
        val, val_widths = stage(spark, args.val_data or [], features=args.features, label=args.label,
                                into=staged_at / "val")
        for source, width in [*widths, *val_widths]:
            check_fits(source, (width,), args.model, model_input)
        job_args = copy.copy(args)
        job_args.data, job_args.val_data = data, val or None
        argv = [*to_argv(job_args), "--result-file", str(result_file)]
        result_file.parent.mkdir(parents=True, exist_ok=True)
        failure = _run(n, argv, echo)
        result = json.loads(result_file.read_text()) if result_file.is_file() else None
        return outcome(result, failure or "the Spark job ended")
    finally:
        remove_staged(staged_at)
        result_file.unlink(missing_ok=True)
        if owned:
            spark.stop()


def _run(n: int, argv: list[str], echo) -> str | None:
    """Run the ranks; None when every rank exited, else how the Spark job failed."""
    import horovod.spark

    from .spark_rank import run_rank

    try:
        codes = horovod.spark.run(run_rank, args=(argv,), num_proc=n, use_gloo=True, env=dict(RANK_ENV),
                                  stdout=echo, stderr=echo, verbose=0)
    except Exception as exc:  # a rank died, a task was lost: Horovod raises plain exceptions
        return f"the Spark job failed ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})"
    return None if codes and codes[0] is not None else "rank 0 returned nothing"
