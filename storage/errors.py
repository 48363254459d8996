"""The one exception tree of fleetmine.

::

    FleetError
    ├── ConfigError            bad settings, unknown backend names, bad URIs
    ├── NotFoundError          a named thing (a clip, its embedding) is not in the lake
    ├── StorageError           the lake cannot do what was asked
    │   ├── TableNotFoundError a table that should exist does not
    │   ├── CommitError        a Delta commit failed for good (after checked retries)
    │   └── LeaseHeldError     lake-wide maintenance lease held by someone else
    └── JobError               a job cannot go on (not a per-item failure)

A failure on one record (a corrupt video, a garbled CAN line) is data, not an
exception: it is recorded in the tables with a reason. These exceptions mean the
operation itself cannot go on.
"""

from __future__ import annotations

__all__ = [
    "CommitError",
    "ConfigError",
    "FleetError",
    "JobError",
    "LeaseHeldError",
    "NotFoundError",
    "StorageError",
    "TableNotFoundError",
]


class FleetError(Exception):
    """Root of every error fleetmine raises on purpose."""


class ConfigError(FleetError):
    """A setting, name or URI is invalid; the message lists what is valid."""


class NotFoundError(FleetError):
    """A clip, drive or embedding asked for by name is not in the lake."""


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
