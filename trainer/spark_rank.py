"""The function ``horovod.spark.run`` ships to every Spark task: one rank of the job.

It is the same rank as under horovodrun (``python -m trainer.job``): it calls
:func:`trainer.job.main` with the same flags, so there is one training step for every
launcher. It lives in an importable module (not a closure) so that Spark pickles it by
reference and the executors import it from the tunegate they run (the archive or image
of ``packaging/spark/``); a pickled closure also trips an AutoGraph warning.
"""

from __future__ import annotations


def run_rank(argv: list[str]) -> int:
    """Run one rank with the job's flags; return its exit status (0 published)."""
    from . import job

    return job.main(argv)
