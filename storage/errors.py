"""The one exception tree of fleetmine.

::

    FleetError
    ├── ConfigError            bad settings, unknown backend names, bad URIs
    ├── StorageError           the lake cannot do what was asked
    │   ├── TableNotFoundError a table that should exist does not
    │   ├── CommitError        a Delta commit failed for good (after checked retries)
    │   └── LeaseHeldError     lake-wide maintenance lease held by someone else
    ├── JobError               a job cannot go on (not a per-item failure)
    └── InputError             one input (a video, a log) is unusable; caught per item
        └── VideoError         (ingest.video) this file or clip gives no frames

A failure on one record (a corrupt video, a garbled CAN line) is data, not an
exception: it is recorded in the tables with a reason. These exceptions mean the
operation itself cannot go on.
"""

from __future__ import annotations

__all__ = [
    "CommitError",
    "ConfigError",
    "FleetError",
    "InputError",
    "JobError",
    "LeaseHeldError",
    "StorageError",
    "TableNotFoundError",
]


class FleetError(Exception):
    """Root of every error fleetmine raises on purpose."""


class ConfigError(FleetError):
    """A setting, name or URI is invalid; the message lists what is valid."""


class StorageError(FleetError):
    """The lake could not complete an operation."""


class TableNotFoundError(StorageError):
    """A table is missing from the lake."""


class CommitError(StorageError):
    """A Delta commit failed after its retries."""


class LeaseHeldError(StorageError):
    """The lake-wide maintenance lease is held by another process."""


class JobError(FleetError):
    """A job cannot go on."""


class InputError(FleetError):
    """One input item cannot be used; callers record it as that item's failure and go on."""
