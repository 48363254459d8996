"""The one exception tree of fleetmine.

::

    FleetError                    (API status)
    ├── ConfigError               400  bad settings, unknown backend names, bad URIs
    ├── NotFoundError             404  a named thing (dataset version, token, ...) is not there
    ├── ConflictError             409  the lake's current state refuses it; retry or wait
    ├── StorageError              500  the lake cannot do what was asked
    │   ├── SchemaError           500  rows that do not fit a table's schema
    │   ├── TableNotFoundError    404  a table that should exist does not (also NotFoundError)
    │   ├── CommitError           409  a Delta commit failed for good (also ConflictError)
    │   ├── LeaseHeldError        409  a lake-wide lease held by someone else (also ConflictError)
    │   └── StorageUnavailableError  503  the object store cannot be reached
    ├── JobError                  500  a job cannot go on (not a per-item failure)
    └── InputError                500  one input (a video, a log) is unusable; caught per item
        ├── VideoError                 (ingest.video) this file or clip gives no frames
        └── ImageError            422  (mining.search.by_example) an uploaded query image is unusable

A failure on one record (a corrupt video, a garbled CAN line) is data, not an
exception: it is recorded in the tables with a reason. These exceptions mean the
operation itself cannot go on. The API maps them to statuses in one place
(``api.app``); the CLI prints their message.
"""

from __future__ import annotations

__all__ = [
    "CommitError",
    "ConfigError",
    "ConflictError",
    "FleetError",
    "IndexUnavailableError",
    "InputError",
    "JobError",
    "LeaseHeldError",
    "NotFoundError",
    "SchemaError",
    "StorageError",
    "StorageUnavailableError",
    "TableNotFoundError",
]


class FleetError(Exception):
    """Root of every error fleetmine raises on purpose."""


class ConfigError(FleetError):
    """A setting, name or URI is invalid; the message lists what is valid."""


class NotFoundError(FleetError):
    """What was asked for by name or id does not exist."""


class ConflictError(FleetError):
    """The lake's current state refuses the operation (someone else holds or changed it)."""


class StorageError(FleetError):
    """The lake could not complete an operation."""


class SchemaError(StorageError):
    """Rows do not fit a table's schema (an unknown or a missing required column)."""


class TableNotFoundError(StorageError, NotFoundError):
    """A table is missing from the lake."""


class CommitError(StorageError, ConflictError):
    """A Delta commit failed after its retries."""


class LeaseHeldError(StorageError, ConflictError):
    """A lake-wide lease is held by another process."""


class StorageUnavailableError(StorageError):
    """The object store did not answer (network, endpoint, credentials refused)."""


class IndexUnavailableError(StorageUnavailableError):
    """A Ray actor holding some of an index's shards is dead or restarting: no whole answer
    now (``mining.search.holders``); the API answers 503 with a retry hint."""


class JobError(FleetError):
    """A job cannot go on."""


class InputError(FleetError):
    """One input item cannot be used; callers record it as that item's failure and go on."""
