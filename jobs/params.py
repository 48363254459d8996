"""What every job request shares: the base model and the bounded field types.

A request model lives in its job's module (``jobs/<kind>_job.py``) and subclasses
:class:`JobParams`: no unknown keys, frozen, every string valid UTF-8. Its fields use
the types here, each bounded, so ``POST /v1/jobs`` answers 422 for a request past a
bound before a ``runs`` row is written.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, model_validator

from mining.datasets.curation import DatasetQuery
from storage.bounds import DATASET_NAME, Name, utf8_text

__all__ = [
    "MAX_PATH",
    "MAX_SHARD_MB",
    "DatasetName",
    "JobParams",
    "LocationStr",
    "ModelRef",
    "Query",
    "ShardMb",
]


def _not_utf8(value: Any, where: str) -> str | None:
    """Where in ``value`` a string cannot be written as UTF-8 (a lone surrogate), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        bad = _not_utf8(key, where) or _not_utf8(item, f"{where}.{key}" if where else str(key))
        if bad is not None:
            return bad
    return None


class JobParams(BaseModel):
    """A job request: its ``kind`` literal and its parameters (subclasses add both)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str

    @model_validator(mode="after")
    def _utf8(self) -> JobParams:
        """Every string must be text: one that is not cannot be stored in ``runs`` or answered
        as JSON, and would break every listing of the jobs after it."""
        bad = _not_utf8(self.model_dump(), "")
        if bad is not None:
            raise ValueError(f"{bad or 'a key'}: not valid Unicode text (a lone surrogate)")
        return self


MAX_PATH = 4096
"""Characters of a location (a local path: PATH_MAX; an S3 key is at most 1024 bytes)."""
MAX_SHARD_MB = 65536.0
"""A shard of 64 GiB: far past any useful one, and its size in bytes is an exact int."""

LocationStr = Annotated[str, Field(min_length=1, max_length=MAX_PATH), AfterValidator(utf8_text)]
ModelRef = Annotated[Name, Field(description="NAME@VERSION or NAME (default: the current model)")]
DatasetName = Annotated[str, Field(pattern=DATASET_NAME, max_length=100)]
ShardMb = Annotated[float, Field(gt=0, le=MAX_SHARD_MB, allow_inf_nan=False, description="target shard size")]
Query = Annotated[
    DatasetQuery,
    PlainSerializer(lambda q: q.model_dump(mode="json", exclude_defaults=True), return_type=dict[str, Any]),
]
"""A dataset query, validated (every list and string bounded) and kept as its JSON."""
