"""The lakehouse: table schemas, Delta IO, object store access, lake config.

Importing ``storage`` never imports Ray; the Ray Data sink lives in
``storage.datasink`` and is imported by jobs that run on Ray.
"""

from storage.config import Settings
from storage.delta import CommitResult, TableWriter, Txn
from storage.errors import (
    CommitError,
    ConfigError,
    FleetError,
    JobError,
    LeaseHeldError,
    StorageError,
    TableNotFoundError,
)
from storage.lake import Lake, TableInfo
from storage.objectstore import Location
from storage.schema import TableSpec
from storage.tables import TABLES

__all__ = [
    "TABLES",
    "CommitError",
    "CommitResult",
    "ConfigError",
    "FleetError",
    "JobError",
    "Lake",
    "LeaseHeldError",
    "Location",
    "Settings",
    "StorageError",
    "TableInfo",
    "TableNotFoundError",
    "TableSpec",
    "TableWriter",
    "Txn",
]
