"""The tables of the lake, one module each; ``TABLES`` maps name to spec."""

from storage.schema import TableSpec
from storage.tables import (
    can_frames,
    clip_frames,
    clips,
    corner_cases,
    dataset_clips,
    dataset_spans,
    datasets,
    drives,
    embeddings,
    ended_sessions,
    leases,
    mining_scores,
    models,
    policies,
    policy_errors,
    reviews,
    runs,
    scenario_hits,
    scenario_scans,
    scenarios,
    schedules,
    signals,
    text_tag_scores,
    text_tags,
    tokens,
)

__all__ = ["TABLES", "get_spec"]

TABLES: dict[str, TableSpec] = {
    m.SPEC.name: m.SPEC
    for m in (
        drives,
        can_frames,
        signals,
        clips,
        clip_frames,
        models,
        embeddings,
        mining_scores,
        corner_cases,
        datasets,
        dataset_clips,
        dataset_spans,
        reviews,
        policies,
        policy_errors,
        scenarios,
        scenario_hits,
        scenario_scans,
        text_tags,
        text_tag_scores,
        runs,
        schedules,
        tokens,
        leases,
        ended_sessions,
    )
}


def get_spec(name: str) -> TableSpec:
    from storage.errors import TableNotFoundError

    try:
        return TABLES[name]
    except KeyError:
        raise TableNotFoundError(f"unknown table {name!r}; known: {sorted(TABLES)}") from None
