"""``fleetmine index``: the FAISS index of a model version built (or topped up) by a stage."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field

from jobs.params import JobParams, ModelRef
from jobs.runner import Runner, StageSpec, single_item_runner
from jobs.runs import one_at_a_time, record_run
from storage.config import Settings
from storage.errors import JobError

if TYPE_CHECKING:  # FAISS loads in the stage that builds, not with the registry
    from mining.search.index import IndexConfig

__all__ = ["INDEX_KINDS", "IndexJob", "IndexStage", "run_index", "run_job"]

INDEX_KINDS = ("auto", "flat", "ivf-flat", "ivf-pq")
"""``mining.search.index.KINDS`` (a test keeps them equal; importing it here would load FAISS)."""
IndexKind = Annotated[str, Field(pattern=f"^({'|'.join(INDEX_KINDS)})$", max_length=16)]
"""One of :data:`INDEX_KINDS`: a ``str`` for callers (the CLI's ``--kind``), a pattern in the schema."""


class IndexJob(JobParams):
    kind: Literal["index"] = "index"
    model: ModelRef | None = None
    index_kind: IndexKind = Field(default="auto", description="flat | ivf-flat | ivf-pq, or auto (by size)")
    shard_size: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000_000,
        description="vectors per shard: the index as shards by date range sharing one quantizer, each "
        "built as a task of its own (on a cluster's nodes when one is named); default: one index",
    )


def run_job(req: IndexJob, settings: Settings, runner: Runner | None = None) -> dict[str, Any]:
    from mining.search.index import IndexConfig

    if req.index_kind == "auto" and req.shard_size is None:
        cfg = None
    else:
        cfg = IndexConfig(kind=req.index_kind, shard_size=req.shard_size)
    return run_index(settings, req.model, cfg, runner=runner)


class IndexStage:
    """Stage: one item per model reference; builds and saves that version's index."""

    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(self, settings: Settings, cfg: IndexConfig | None = None):
        self.settings = settings
        self.cfg = cfg

    def setup(self) -> None:
        pass

    def process_batch(self, models: list[str | None]) -> list[dict[str, Any]]:
        from mining.search.queries import build_index

        return [build_index(self.settings, m, self.cfg) for m in models]


def run_index(
    settings: Settings, model: str | None = None, cfg: IndexConfig | None = None, runner: Runner | None = None
) -> dict[str, Any]:
    runner = runner or single_item_runner(settings.ray_address)
    if cfg is None:  # as saved: a set of shards stays one (topped up, or built again as a set)
        cfg = _saved_set(settings, model)
    if cfg is not None and cfg.shard_size:
        return _run_sharded(settings, model, cfg, runner)
    (outcome,) = runner.map(StageSpec(IndexStage, (settings, cfg)), [model])
    if outcome.result is None:
        raise JobError(f"index of {model or 'the current model'} failed: {outcome.error}")
    return dict(outcome.result)


def _saved_set(settings: Settings, model: str | None) -> IndexConfig | None:
    """The config of the version's saved index when it is a set of shards, else None: a
    plain ``fleetmine index`` (no kind, no shard size) goes on with what was built, and a
    set that must be built again (an IVF-PQ set saved before its shards kept their vectors,
    :func:`~mining.search.shards.sharded_as`) is built again as shards, by the runner."""
    from mining.encoders.registry import resolve
    from mining.search.index import ClipIndex, IndexConfig
    from storage.lake import Lake

    lake = Lake.from_settings(settings)
    meta = ClipIndex.read_meta(ClipIndex.location(lake, resolve(lake, model)))
    if not (meta and meta.get("shards")):
        return None
    return IndexConfig.from_dict(meta.get("config") or {})


def _run_sharded(settings: Settings, model: str | None, cfg: IndexConfig, runner: Runner) -> dict[str, Any]:
    """The version's index (and each sub-space index) as shards of ``cfg.shard_size``: a new
    set, each shard a task of :class:`~mining.search.shards.ShardStage`, named at once when
    all are written; a set of that size already saved is topped up (the newest shard grows,
    the others stay). The ``runs`` row lists every shard: days, vectors, the node that built it."""
    from mining.encoders.registry import resolve
    from mining.search import serving
    from mining.search.index import ClipIndex
    from mining.search.queries import appearance_of, behaviour_of, build_part, own_index
    from mining.search.shards import ShardStage, name_shards, prepare_shards, sharded_as
    from storage.lake import Lake

    lake = Lake.from_settings(settings)
    spec = resolve(lake, model)
    run_id = f"index-{spec.name}-{spec.version}-{uuid.uuid4().hex[:12]}"
    params = {"model": spec.ref, "shard_size": cfg.shard_size, "index_kind": cfg.kind}
    out: dict[str, Any] = {}
    # One build of a version's index at a time: a build's clean-up removes the files of the
    # builds before the last, which another's shards, written but not yet named, would be.
    with one_at_a_time(lake, f"index:{spec.ref}"), record_run(lake, run_id, "index", params) as run:
        subs = [s for s in (own_index(spec, appearance_of(spec)), behaviour_of(spec)) if s is not None]
        for sub in [None, *subs]:
            loc = ClipIndex.location(lake, spec, sub.name if sub else None)
            if sharded_as(loc, cfg):
                part = build_part(lake, spec, cfg, sub)  # a top-up: the newest shard grows
                meta = ClipIndex.read_meta(loc) or {}
            else:
                prepared = prepare_shards(lake, spec, sub, cfg)
                outcomes = runner.map(StageSpec(ShardStage, prepared.stage_args), prepared.plans)
                failed = [f"shard {o.item.number}: {o.error}" for o in outcomes if not o.ok]
                if failed:
                    raise JobError(
                        f"index of {spec.ref}: {len(failed)} shard(s) failed, none named: {failed[:5]}"
                    )
                meta = name_shards(lake, spec, sub, cfg, prepared, [o.result for o in outcomes])
                part = {
                    "model": spec.ref,
                    "factory": meta["factory"],
                    "kind": meta["kind"],
                    "vectors": meta["n"],
                    "added": meta["n"],
                    "rebuilt": True,
                    "build": meta["build"],
                    "uri": loc.uri,
                }
            shards = [
                {k: s.get(k) for k in ("number", "first_day", "last_day", "n", "node")}
                for s in meta["shards"]
            ]
            part["shards"] = shards
            if sub is None:
                out.update(part)
                run.counts.update(vectors=part["vectors"], shards=shards)
            else:
                out[sub.name] = part
                run.counts[f"{sub.name}_shards"] = len(shards)
    serving.forget(lake, spec)  # this process serves the new set from its next search
    out["run_id"] = run_id
    return out
