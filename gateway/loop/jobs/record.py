"""Each model's fine-tune record on the repository: the job the gateway's leader is running.

``<repo>/<model>/.loop/jobs.json``, written atomically by the loop's leader only. It is
what makes "one job per model" hold across workers, replicas and leaders: a new leader
reads it, asks the launcher about the job it names (by its Kubernetes Job name or its local
process record) and follows that job instead of starting a second one. What a job trained
on is not here but in the ledger (``model_repo.ledger``: its version's manifest, or the
attempts of jobs that published nothing), which every actor writes, whoever launched the
job. An unreadable record is reported and read as empty: the store and launcher still hold
the truth about data and jobs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from model_repo.durable import atomic_write_json

from ..evidence import LOOP_DIR

log = logging.getLogger("tunegate.jobs")

RECORD_FILE = "jobs.json"


@dataclass
class JobRecord:
    # {"job_id", "base_version", "trigger", "started_at", "feedback_through"}: the last is the
    # store's last number at the start, recorded in the ledger if the job fails
    running: dict[str, Any] | None = None
    last: dict[str, Any] | None = None  # the last finished job's status

    @property
    def running_id(self) -> str | None:
        return None if self.running is None else str(self.running["job_id"])


def record_path(repo_root: Path, model: str) -> Path:
    return Path(repo_root) / model / LOOP_DIR / RECORD_FILE


def read_record(repo_root: Path, model: str) -> JobRecord:
    """The model's record (blocking); empty when there is none or it cannot be read."""
    path = record_path(repo_root, model)
    try:
        data = json.loads(path.read_bytes())
        return JobRecord(running=data.get("running"), last=data.get("last"))
    except FileNotFoundError:
        return JobRecord()
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.error("model %s: fine-tune record %s unreadable (%s: %s); reading it as empty", model, path,
                  type(exc).__name__, exc)
        return JobRecord()


def write_record(repo_root: Path, model: str, record: JobRecord) -> None:
    path = record_path(repo_root, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, asdict(record))
