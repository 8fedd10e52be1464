"""The application ``spark-submit`` runs: ``tunegate finetune --launcher spark`` inside the
SparkSession spark-submit made (its master, archives and conf), so the job's flags are
``tunegate finetune``'s:

    spark-submit --master yarn --archives tunegate-spark-env.tar.gz#environment \\
      --conf spark.pyspark.python=./environment/bin/python \\
      packaging/spark/finetune.py --repo /shared/models --model digits --data db.feedback --np 4
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from pyspark.sql import SparkSession

    from tunegate_cli import main as tunegate

    SparkSession.builder.getOrCreate()  # spark-submit's settings; the launcher finds it active
    return tunegate(["finetune", "--launcher", "spark", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
