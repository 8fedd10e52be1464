"""Errors raised by the fine-tuning trainer, and the exit codes they map to.

Every error carries an HTTP-like ``status`` (so a control route can answer with it) and an
``exit_code`` (what ``tunegate finetune`` and ``python -m trainer.job`` exit with)::

    TrainerError (500, exit 1)
    ├── DataError (400, exit 2)          a data file missing, unreadable, or not fitting the model
    ├── ModelError (404, exit 2)         unknown model/version, or no trainable Keras source
    ├── NotPromoted (409, exit 3)        trained, but the candidate failed the gate: nothing published
    └── JobFailed (500, exit 1)          a worker died or horovodrun failed: nothing published

Exit 0 means a new version was published.
"""

from __future__ import annotations

# One definition, shared with the gateway's launchers (which read them back as job states).
from model_repo.jobs import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_NOT_PROMOTED, EXIT_OK  # noqa: F401

# Set by a launcher that reads rank 0's result file (trainer.launcher): a rank whose outcome
# is decided (bad input, not promoted) then exits 0, so horovodrun does not report it as a
# crash with a traceback, and the launcher exits with the outcome's code. Cluster ranks
# (Kubernetes, where the Job's status may be all a submitter sees) keep the codes.
OUTCOME_IN_RESULT_FILE = "TUNEGATE_OUTCOME_IN_RESULT_FILE"
DECIDED_EXIT_CODES = (EXIT_BAD_INPUT, EXIT_NOT_PROMOTED)


class TrainerError(Exception):
    status = 500
    exit_code = EXIT_FAILED

    def __init__(self, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})  # JSON-able facts for the result file (e.g. metrics)


class DataError(TrainerError):
    status = 400
    exit_code = EXIT_BAD_INPUT


class ModelError(TrainerError):
    status = 404
    exit_code = EXIT_BAD_INPUT


class NotPromoted(TrainerError):
    status = 409
    exit_code = EXIT_NOT_PROMOTED


class JobFailed(TrainerError):
    status = 500
    exit_code = EXIT_FAILED


_BY_NAME = {cls.__name__: cls for cls in (TrainerError, DataError, ModelError, NotPromoted, JobFailed)}


def error_from_result(kind: str, message: str, details: dict | None = None) -> TrainerError:
    """Rebuild the error a job's rank 0 reported in its result file (see ``trainer.job``)."""
    return _BY_NAME.get(kind, TrainerError)(message, details)
