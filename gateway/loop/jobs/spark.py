"""The Spark launcher: ``tunegate finetune --launcher spark`` as a local subprocess.

The subprocess is the Spark driver; ``horovod.spark.run`` puts the ranks on the cluster
``master`` names (``local[N]`` on this host). Everything else is the local launcher's: the
job directory, log tail, outcome JSON, one job per model, cancel by process group (the
driver, its JVM and, in local mode, the executors' Python workers and ranks).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .launcher import JobSpec
from .local import LocalLauncher


class SparkLauncher(LocalLauncher):
    def __init__(self, jobs_dir: str | os.PathLike[str], *, master: str, conf: Mapping[str, str] | None = None,
                 program: tuple[str, ...] | None = None, env: dict[str, str] | None = None) -> None:
        super().__init__(jobs_dir, program=program, env=env)
        self.master = master
        self.conf = dict(conf or {})

    def command(self, spec: JobSpec) -> list[str]:
        argv = [*super().command(spec), "--launcher", "spark", "--spark-master", self.master]
        for key, value in self.conf.items():
            argv += ["--spark-conf", f"{key}={value}"]
        return argv
