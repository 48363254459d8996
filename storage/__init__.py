"""The lakehouse: table schemas, Delta IO, object store access, lake config.

Importing ``storage`` never imports Ray; the Ray Data sink lives in
``storage.datasink`` and is imported by jobs that run on Ray. ``storage`` imports
nothing from the packages above it: the vocabularies they share (``CANONICAL``,
the clip ``FEATURES`` and ``EVENTS``, the CAN ``FRAME`` columns) live in the table
modules, and the reads they share in :mod:`storage.filters` and :mod:`storage.reads`.
"""

from storage.config import Settings
from storage.delta import CommitResult, TableWriter, Txn
from storage.errors import (
    CommitError,
    ConfigError,
    ConflictError,
    FleetError,
    InputError,
    JobError,
    LeaseHeldError,
    NotFoundError,
    SchemaError,
    StorageError,
    StorageUnavailableError,
    TableNotFoundError,
)
from storage.filters import ClipFilter
from storage.lake import Lake
from storage.maintenance import TableInfo
from storage.objectstore import Location
from storage.reads import read_clip_signals
from storage.schema import TableSpec
from storage.tables import TABLES

__all__ = [
    "TABLES",
    "ClipFilter",
    "CommitError",
    "CommitResult",
    "ConfigError",
    "ConflictError",
    "FleetError",
    "InputError",
    "JobError",
    "Lake",
    "LeaseHeldError",
    "Location",
    "NotFoundError",
    "SchemaError",
    "Settings",
    "StorageError",
    "StorageUnavailableError",
    "TableInfo",
    "TableNotFoundError",
    "TableSpec",
    "TableWriter",
    "Txn",
    "read_clip_signals",
]
