"""Data where Spark users keep it: a Parquet path (local, ``hdfs://``, ``s3a://``...) or a
Spark SQL table, read by Spark for ``tunegate finetune --launcher spark``.

Spark's executors read the source and write the chosen columns (features, then the label)
as Parquet part files into a staging directory beside the model in the repository, which
every rank can already reach (it loads the model from there and rank 0 publishes there);
the ranks then read the staged table like any ``*.parquet`` directory. Nothing is
collected on the driver: it only reads the schema, which is also where a missing table,
a missing column or a non-numeric one fails, before any rank starts.

``.npz``, ``.csv`` and feedback stores are left to the ranks, as under horovodrun.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from .data import FEEDBACK_SCHEME, PARQUET_SUFFIXES
from .errors import DataError
from .preflight import feature_columns

STAGING_DIR = ".spark-data"  # beside the model's versions: the repository ignores dot entries
_TABLE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*){0,2}")
_URL = re.compile(r"[A-Za-z][\w+.-]*://")
_FILE_SUFFIXES = (".npz", ".csv", *PARQUET_SUFFIXES)


def spark_source(spec: str) -> str | None:
    """``"parquet"`` or ``"table"`` when Spark should read ``spec``, else None (a file the
    ranks read themselves, or a feedback store)."""
    if spec.startswith(FEEDBACK_SCHEME):
        return None
    if _URL.match(spec) or spec.lower().rstrip("/").endswith(PARQUET_SUFFIXES):
        return "parquet"
    if not Path(spec).exists() and _TABLE_NAME.fullmatch(spec) and not spec.lower().endswith(_FILE_SUFFIXES):
        return "table"
    return None


def looks_like_table(spec: str) -> bool:
    """For horovodrun's "not found" message: a name that only Spark could resolve."""
    return spark_source(spec) == "table"


def stage(spark, specs: Sequence[str], *, features: Sequence[str] | None, label: str | None,
          into: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Replace every Spark source in ``specs`` by a staged Parquet directory under ``into``.

    Returns the new specs and (source, feature count) per staged source, for the check
    against the model's input."""
    out: list[str] = []
    widths: list[tuple[str, int]] = []
    for index, spec in enumerate(specs):
        kind = spark_source(spec)
        if kind is None:
            out.append(spec)
            continue
        frame = _read(spark, spec, kind)
        names, label_name = _columns(spec, frame.schema, features, label or "label")
        target = into / f"{index}.parquet"
        # Executors write their partitions; the driver moves no rows.
        frame.select(*names, label_name).write.mode("overwrite").parquet(target.absolute().as_uri())
        out.append(str(target))
        widths.append((spec, len(names)))
    return out, widths


def staging_dir(repo: str | Path, model: str, job: str) -> Path:
    return Path(repo) / model / STAGING_DIR / job


def remove_staged(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _read(spark, spec: str, kind: str):
    from pyspark.errors import AnalysisException

    try:
        return spark.read.parquet(spec) if kind == "parquet" else spark.table(spec)
    except AnalysisException as exc:
        what = "Parquet data" if kind == "parquet" else "Spark SQL table"
        first = str(exc).strip().splitlines()[0]
        raise DataError(f"{spec}: Spark cannot read it as {what}: {first}") from None


def _columns(spec: str, schema, features: Sequence[str] | None, label: str) -> tuple[list[str], str]:
    from pyspark.sql.types import BooleanType, NumericType

    names = feature_columns(spec, list(schema.names), features, label)
    for name in [*names, label]:
        kind = schema[name].dataType
        if not isinstance(kind, (NumericType, BooleanType)):
            raise DataError(f"{spec}: column {name!r} holds {kind.simpleString()}, not numbers")
    return names, label
