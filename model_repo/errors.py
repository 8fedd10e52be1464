"""Errors raised by the model repository.

Every error carries the HTTP status a server should answer with, so the gateway can
turn any of them into ``{"error": msg}`` without a table of its own::

    RepositoryError (500)
    ├── InvalidName (400)         a model or version name that is not legal or escapes the repo
    ├── ModelNotFound (404)
    ├── VersionNotFound (404)     unknown, or not available under the version policy
    ├── ConfigError (400)         config.pbtxt missing fields or not parseable
    ├── ManifestError (500)       manifest.json missing or malformed
    ├── IntegrityError (500)      a file's sha256 does not match the manifest
    ├── PublishError (500)        a staged version could not be published
    │   └── Superseded (409)      a fine-tune's base already has a fine-tuned child (another job won)
    ├── FeedbackError (400)       a feedback record that cannot be stored (bad arrays)
    └── FeedbackCorrupt (500)     the feedback store cannot give what was asked
"""

from __future__ import annotations


class RepositoryError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidName(RepositoryError):
    status = 400


class ModelNotFound(RepositoryError):
    status = 404


class VersionNotFound(RepositoryError):
    status = 404


class ConfigError(RepositoryError):
    status = 400


class ManifestError(RepositoryError):
    status = 500


class IntegrityError(RepositoryError):
    status = 500


class PublishError(RepositoryError):
    status = 500


class Superseded(PublishError):
    status = 409


class FeedbackError(RepositoryError):
    """A feedback record that cannot be stored (bad arrays): the client's fault."""

    status = 400


class FeedbackCorrupt(RepositoryError):
    """The store cannot give what was asked. (Damaged records are quarantined, never raised.)"""

    status = 500
