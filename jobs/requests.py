"""Job requests: one typed model per job kind, shared by the CLI, ``POST /v1/jobs`` and
(later) the scheduler. A request says what to do; :func:`execute` runs it.

Adding a job kind: a request model here (with its ``kind`` literal), a
``jobs/<kind>_job.py`` that composes its stages, and a case in :func:`execute`.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from jobs.runner import Runner
from mining.curation import DatasetQuery
from storage.bounds import DATASET_NAME, MAX_VERSION, Name, utf8_text
from storage.config import Settings
from storage.errors import ConfigError

__all__ = [
    "JOB_KINDS",
    "DatasetJob",
    "EmbedJob",
    "ExportJob",
    "IndexJob",
    "IngestJob",
    "JobRequest",
    "MineJob",
    "execute",
    "parse_job",
    "summary",
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


class _Job(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _utf8(self) -> _Job:
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

Location = Annotated[str, Field(min_length=1, max_length=MAX_PATH), AfterValidator(utf8_text)]
ModelRef = Annotated[Name, Field(description="NAME@VERSION or NAME (default: the current model)")]
DatasetName = Annotated[str, Field(pattern=DATASET_NAME, max_length=100)]
ShardMb = Annotated[float, Field(gt=0, le=MAX_SHARD_MB, allow_inf_nan=False, description="target shard size")]
INDEX_KINDS = ("auto", "flat", "ivf-flat", "ivf-pq")
"""``mining.index.KINDS`` (a test keeps them equal; importing it here would load FAISS)."""
IndexKind = Annotated[str, Field(pattern=f"^({'|'.join(INDEX_KINDS)})$", max_length=16)]
"""One of :data:`INDEX_KINDS`: a ``str`` for callers (the CLI's ``--kind``), a pattern in the schema."""
Query = Annotated[
    DatasetQuery,
    PlainSerializer(lambda q: q.model_dump(mode="json", exclude_defaults=True), return_type=dict[str, Any]),
]
"""A dataset query, validated (every list and string bounded) and kept as its JSON."""


class IngestJob(_Job):
    kind: Literal["ingest"] = "ingest"
    raw: Location = Field(description="raw fleet upload tree: <vehicle>/<drive>/{cameras,can}/")
    force: bool = False


class EmbedJob(_Job):
    kind: Literal["embed"] = "embed"
    model: ModelRef | None = None


class IndexJob(_Job):
    kind: Literal["index"] = "index"
    model: ModelRef | None = None
    index_kind: IndexKind = Field(default="auto", description="flat | ivf-flat | ivf-pq, or auto (by size)")


class MineJob(_Job):
    kind: Literal["mine"] = "mine"
    model: ModelRef | None = None
    full: bool = Field(
        default=False,
        description="re-score and re-rank every clip (default: new clips only) against the cluster "
        "model, which is fitted again only with refit or once the corpus outgrows it",
    )
    refit: bool = Field(default=False, description="fit the cluster model again (a full run)")


class ExportJob(_Job):
    kind: Literal["export"] = "export"
    name: DatasetName
    version: int = Field(ge=1, le=MAX_VERSION)
    shard_mb: ShardMb = 512
    format: Literal["webdataset", "lerobot"] = Field(
        default="webdataset", description="webdataset: shards + manifest; lerobot: a LeRobotDataset v3.0 tree"
    )
    out: Location | None = Field(
        default=None, description="lerobot: where to write the tree (default: <lake>/datasets/NAME/V/lerobot)"
    )

    @model_validator(mode="after")
    def _out_is_lerobot(self) -> ExportJob:
        """Shards live in the lake: an ``out`` for them is refused here, not by the job later."""
        if self.out is not None and self.format != "lerobot":
            raise ValueError("out: only --format lerobot writes elsewhere; shards live in the lake")
        return self


class DatasetJob(_Job):
    """A new dataset version from a query (and its export): what ``POST /v1/datasets``
    submits when the query may read more rows than a request should."""

    kind: Literal["dataset"] = "dataset"
    name: DatasetName
    query: Query = Field(default_factory=DatasetQuery)
    export: bool = True
    shard_mb: ShardMb = 512


JobRequest = Annotated[
    IngestJob | EmbedJob | IndexJob | MineJob | ExportJob | DatasetJob, Field(discriminator="kind")
]
JOB_KINDS = ("ingest", "embed", "index", "mine", "export", "dataset")
_ADAPTER: TypeAdapter[Any] = TypeAdapter(JobRequest)


def parse_job(kind: str, params: dict[str, Any]) -> Any:
    """The request for ``kind`` with ``params``; a ConfigError says what is wrong."""
    if kind not in JOB_KINDS:
        raise ConfigError(f"unknown job kind {kind!r}; valid kinds: {list(JOB_KINDS)}")
    try:
        return _ADAPTER.validate_python({**params, "kind": kind})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or kind}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"bad {kind} job parameters: {problems}") from None


def execute(req: Any, settings: Settings, runner: Runner | None = None, **hooks: Any) -> Any:
    """Run one request to its end; returns the job's report."""
    match req:
        case IngestJob():
            from jobs.ingest_job import run_ingest

            return run_ingest(req.raw, settings, force=req.force, runner=runner, **hooks)
        case EmbedJob():
            from jobs.embed_job import run_embed

            return run_embed(settings, req.model, runner=runner)
        case IndexJob():
            from jobs.index_job import run_index
            from mining.index import IndexConfig

            cfg = None if req.index_kind == "auto" else IndexConfig(kind=req.index_kind)
            return run_index(settings, req.model, cfg, runner=runner)
        case MineJob():
            from jobs.mine_job import run_mine
            from mining.novelty import MineConfig

            return run_mine(settings, req.model, MineConfig(full=req.full, refit=req.refit), runner=runner)
        case ExportJob():
            from jobs.export_job import export_version
            from storage.lake import Lake

            lake = Lake.from_settings(settings)
            if req.format == "lerobot":
                from mining.lerobot import export_lerobot

                return export_lerobot(lake, req.name, req.version, req.out)
            if req.out is not None:
                raise ConfigError("out: only --format lerobot writes elsewhere; shards live in the lake")
            return export_version(lake, req.name, req.version, int(req.shard_mb * 1024 * 1024), runner=runner)
        case DatasetJob():
            from jobs.export_job import export_version
            from mining.curation import create_version, get_version
            from storage.lake import Lake

            lake = Lake.from_settings(settings)
            row = create_version(lake, req.name, req.query)
            if req.export:
                export_version(lake, req.name, row["version"], int(req.shard_mb * 1024 * 1024), runner=runner)
                row = get_version(lake, req.name, row["version"])
            return {k: row[k] for k in ("name", "version", "clip_count", "state")}
    raise ConfigError(f"not a job request: {req!r}")


def summary(report: Any) -> dict[str, Any]:
    """A report as JSON-able counters (what ``GET /v1/jobs/{id}`` shows)."""
    from jobs.ingest_job import IngestReport

    if isinstance(report, IngestReport):
        return {"run_id": report.run_id, "ok": len(report.ok), "failed": len(report.failed), **report.counts}
    if is_dataclass(report) and not isinstance(report, type):
        return asdict(report)
    if isinstance(report, dict) and "shardlist" in report:
        return {"num_samples": report["num_samples"], "shards": len(report["shardlist"])}
    return dict(report)
