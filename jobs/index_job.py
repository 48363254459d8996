"""``fleetmine index``: the FAISS index of a model version built (or topped up) by a stage."""

from __future__ import annotations

from typing import Any, ClassVar

from jobs.runner import Runner, StageSpec, single_item_runner
from mining.index import IndexConfig
from mining.queries import build_index
from storage.config import Settings
from storage.errors import JobError

__all__ = ["IndexStage", "run_index"]


class IndexStage:
    """Stage: one item per model reference; builds and saves that version's index."""

    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(self, settings: Settings, cfg: IndexConfig | None = None):
        self.settings = settings
        self.cfg = cfg

    def setup(self) -> None:
        pass

    def process_batch(self, models: list[str | None]) -> list[dict[str, Any]]:
        return [build_index(self.settings, m, self.cfg) for m in models]


def run_index(
    settings: Settings, model: str | None = None, cfg: IndexConfig | None = None, runner: Runner | None = None
) -> dict[str, Any]:
    runner = runner or single_item_runner(settings.ray_address)
    (outcome,) = runner.map(StageSpec(IndexStage, (settings, cfg)), [model])
    if outcome.result is None:
        raise JobError(f"index of {model or 'the current model'} failed: {outcome.error}")
    return dict(outcome.result)
