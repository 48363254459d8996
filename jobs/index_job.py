"""``fleetmine index``: the FAISS index of a model version built (or topped up) by a stage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field

from jobs.params import JobParams, ModelRef
from jobs.runner import Runner, StageSpec, single_item_runner
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


def run_job(req: IndexJob, settings: Settings, runner: Runner | None = None) -> dict[str, Any]:
    from mining.search.index import IndexConfig

    cfg = None if req.index_kind == "auto" else IndexConfig(kind=req.index_kind)
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
    (outcome,) = runner.map(StageSpec(IndexStage, (settings, cfg)), [model])
    if outcome.result is None:
        raise JobError(f"index of {model or 'the current model'} failed: {outcome.error}")
    return dict(outcome.result)
