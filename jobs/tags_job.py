"""``fleetmine tags run``: zero-shot tag versions scored over every clip, in one commit.

Items are a day's clips (at most ``clips_per_item``) of one model version: each tag version
is pinned to a model, and visits only the clips with a vector of that model and no
``text_tag_scores`` row of the version yet, so a re-run adds nothing and new clips (or a
new version) are all it reads. The prompts are embedded once per run, here, by the model's
text side (:func:`mining.search.by_text.text_vectors`); the runner sends each batch of items
to a :class:`TagStage` (sequential locally, Ray tasks on a cluster), which reads the stored
vectors of its clips (no image is decoded), scores them (:func:`mining.tags.cosine_scores`),
writes the rows as data files and returns the add-actions. One commit tagged
``Txn("tags", n)`` publishes them, checked for having landed before a retry: a run killed
before the commit left only unreferenced files (vacuumed later), one killed after it finds
those pairs done.
"""

from __future__ import annotations

import datetime as dt
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from jobs.params import JobParams
from jobs.runner import Runner, StageSpec, default_runner
from jobs.runs import one_at_a_time, record_run
from mining.encoders.vectors import matrix, of_model, read_by_ids
from mining.interfaces import ModelSpec
from mining.tags.registry import TagSpec, latest_tags, resolve_tags
from mining.tags.scores import clip_block, cosine_scores
from storage.bounds import MAX_NAMES, Name
from storage.config import Settings
from storage.delta import Txn
from storage.faults import fault_point
from storage.lake import Lake
from storage.tables import text_tag_scores

__all__ = ["TagBatch", "TagStage", "TagWork", "TagsJob", "TagsReport", "run_tags"]

APP_ID = "tags"
CLIPS_PER_ITEM = 5000  # one read of their vectors: an IN list a few thousand long (read_by_ids)
log = logging.getLogger(__name__)


class TagsJob(JobParams):
    kind: Literal["tags"] = "tags"
    tags: list[Name] = Field(
        default_factory=list,
        max_length=MAX_NAMES,
        description="tag versions to score (NAME: its latest, or NAME@VERSION); default: every name's latest",
    )


@dataclass
class TagsReport:
    run_id: str
    tags: list[str] = field(default_factory=list)  # the versions run, NAME@V
    scored: int = 0  # (clip, tag version) rows written
    passed: int = 0  # of them, those over their tag's threshold
    blank: int = 0  # of them, clips whose vector is all zeros or not finite: no score
    already: int = 0  # pairs that had a row before this run
    unembedded: int = 0  # pairs whose clip has no vector of the tag's model (embed it first)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)


@dataclass(frozen=True)
class TagWork:
    """One item: clips of one day and model, and which tag versions each still needs."""

    key: int  # its place in the plan: names its data files
    date: dt.date
    model: str  # NAME@V
    clip_ids: tuple[str, ...]
    needs: tuple[tuple[str, tuple[str, ...]], ...]  # (tag NAME@V, the clip ids it has no row for)

    @property
    def label(self) -> str:
        return f"{self.date.isoformat()} ({len(self.clip_ids)} clips of {self.model})"


@dataclass
class TagBatch:
    actions: list[Any]
    scored: int = 0
    passed: int = 0
    blank: int = 0
    error: str | None = None


class TagStage:
    """Scores a batch of :class:`TagWork` items; returns written ``text_tag_scores`` files."""

    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(
        self,
        lake: Lake,
        models: dict[str, ModelSpec],
        tags: dict[str, tuple[TagSpec, np.ndarray]],
        run_id: str,
    ):
        self.lake, self.models, self.tags, self.run_id = lake, models, tags, run_id

    def setup(self) -> None:
        self.writer = self.lake.writer(text_tag_scores.SPEC.name)

    def process_batch(self, items: list[TagWork]) -> list[TagBatch]:
        out = []
        for w in items:  # one item's failure is that item's, not its batch's
            try:
                out.append(self._one(w))
            except Exception as exc:  # the type only: a message may quote data
                log.warning("tags of %s failed: %s", w.label, "".join(traceback.format_exception(exc)))
                out.append(TagBatch([], error=f"{type(exc).__name__} (traceback in the worker log)"))
        return out

    def _one(self, w: TagWork) -> TagBatch:
        fault_point("tags.item")
        spec = self.models[w.model]
        found: dict[str, np.ndarray] = {}
        for t in read_by_ids(
            self.lake, "embeddings", ["clip_id", "vector"], list(w.clip_ids), of_model(spec)
        ):
            vectors = clip_block(spec, matrix(t.column("vector"), spec.dim))
            for cid, row in zip(t.column("clip_id").to_pylist(), vectors, strict=True):
                found.setdefault(cid, row)
        now = dt.datetime.now(dt.UTC)
        parts = []
        for ref, ids in w.needs:
            tag, prompts = self.tags[ref]
            have = [c for c in ids if c in found]  # a vector deleted since the plan: next run
            if not have:
                continue
            scores = cosine_scores(np.stack([found[c] for c in have]), prompts)
            known = ~np.isnan(scores)
            passed = np.zeros(len(have), bool)
            passed[known] = scores[known] >= tag.threshold
            n = len(have)
            parts.append(
                pa.table(
                    {
                        "clip_id": pa.array(have, pa.string()),
                        "date": pa.array([w.date] * n, pa.date32()),
                        "tag_name": pa.array([tag.name] * n, pa.string()),
                        "tag_version": pa.array([tag.version] * n, pa.int32()),
                        "score": pa.array(scores, pa.float64(), mask=~known),
                        "passed": pa.array(passed, pa.bool_()),
                        "run_id": pa.array([self.run_id] * n, pa.string()),
                        "scored_at": pa.array([now] * n, text_tag_scores.SPEC.schema.field("scored_at").type),
                    },
                    schema=text_tag_scores.SPEC.schema,
                )
            )
        if not parts:
            return TagBatch([])
        rows = pa.concat_tables(parts)
        actions = self.writer.write(rows, prefix=f"{self.run_id}-{w.key:06d}")
        flags = rows.column("passed")
        return TagBatch(
            actions, rows.num_rows, int(pc.sum(flags).as_py() or 0), rows.column("score").null_count
        )


@dataclass
class _Plan:
    items: list[TagWork]
    already: int
    unembedded: int


def _pending(lake: Lake, tags: list[TagSpec], models: dict[str, ModelSpec], per_item: int) -> _Plan:
    """The (clip, tag version) pairs without a row whose clip has a vector of the tag's
    model, as items of one day and model (columnar until the pending pairs)."""
    clips = lake.read("clips", columns=["clip_id", "date"])
    done = lake.read(  # the table exists: run_tags created it
        text_tag_scores.SPEC.name,
        columns=["tag_name", "tag_version", "clip_id"],
        where=" OR ".join(f"({t.rows()})" for t in tags),
    )
    already = unembedded = 0
    items: list[TagWork] = []
    for ref, spec in sorted(models.items()):
        vectors = lake.read("embeddings", columns=["clip_id"], where=of_model(spec)).column("clip_id")
        todo: dict[dt.date, dict[str, set[str]]] = {}
        for tag in (t for t in tags if t.model == ref):
            mine = pc.and_(
                pc.equal(done.column("tag_name"), tag.name), pc.equal(done.column("tag_version"), tag.version)
            )
            seen = pc.is_in(clips.column("clip_id"), value_set=done.column("clip_id").filter(mine))
            already += int(pc.sum(seen).as_py() or 0)
            need = clips.filter(pc.invert(seen))
            ready = need.filter(pc.is_in(need.column("clip_id"), value_set=vectors))
            unembedded += need.num_rows - ready.num_rows
            days = ready.column("date").to_pylist()
            for cid, day in zip(ready.column("clip_id").to_pylist(), days, strict=True):
                todo.setdefault(day, {}).setdefault(tag.ref, set()).add(cid)
        for day, by_tag in sorted(todo.items()):
            ids = sorted(set().union(*by_tag.values()))
            for at in range(0, len(ids), per_item):
                chunk = tuple(ids[at : at + per_item])
                needs = tuple((r, tuple(c for c in chunk if c in cs)) for r, cs in sorted(by_tag.items()))
                items.append(TagWork(len(items), day, ref, chunk, tuple((r, cs) for r, cs in needs if cs)))
    return _Plan(items, already, unembedded)


def run_job(req: TagsJob, settings: Settings, runner: Runner | None = None, **hooks: Any) -> TagsReport:
    """The ``tags`` kind: ``hooks`` are :func:`run_tags`'s (``on_plan``, ``on_batch``)."""
    return run_tags(settings, list(req.tags) or None, runner=runner, **hooks)


def run_tags(
    settings: Settings,
    refs: list[str] | None = None,
    runner: Runner | None = None,
    clips_per_item: int = CLIPS_PER_ITEM,
    items_per_task: int = 8,
    on_plan: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> TagsReport:
    """Score every clip each of ``refs`` (``NAME`` or ``NAME@V``; default: every name's latest
    version) has not scored yet."""
    from mining.encoders.registry import resolve
    from mining.search.by_text import text_vectors

    lake = Lake.from_settings(settings)
    lake.create_tables(["clips", "embeddings", "text_tags", "text_tag_scores"])
    tags = resolve_tags(lake, refs) if refs else latest_tags(lake)
    with one_at_a_time(lake, APP_ID):  # from the plan to the commit: see jobs.runs.one_at_a_time
        number = lake.last_run_number(APP_ID, [text_tag_scores.SPEC.name]) + 1
        report = TagsReport(f"tags-{number:06d}", [t.ref for t in tags])
        models = {m: resolve(lake, m) for m in sorted({t.model for t in tags})}
        plan = _pending(lake, tags, models, max(1, clips_per_item)) if tags else _Plan([], 0, 0)
        report.already, report.unembedded = plan.already, plan.unembedded
        if on_plan is not None:
            on_plan(len(plan.items))
        if not plan.items:
            return report
        wanted = {r for w in plan.items for r, _ in w.needs}
        prompts = {
            t.ref: (t, text_vectors(lake, models[t.model], list(t.prompts))) for t in tags if t.ref in wanted
        }
        runner = runner or default_runner(settings.ray_address)
        with record_run(lake, report.run_id, "tags", {"tags": report.tags}) as run:
            stage = StageSpec(TagStage, (lake, models, prompts, report.run_id))
            tick = (lambda o: on_batch(1)) if on_batch is not None else None
            actions: list[Any] = []
            for o in runner.map(stage, plan.items, batch_size=items_per_task, on_outcome=tick):
                batch = o.result
                if not isinstance(batch, TagBatch) or batch.error is not None:
                    report.failed.append((o.item.label, str(o.error if batch is None else batch.error)))
                    continue
                actions += batch.actions
                report.scored += batch.scored
                report.passed += batch.passed
                report.blank += batch.blank
            txn = Txn(APP_ID, number)
            if actions and not lake.committed(text_tag_scores.SPEC.name, txn):
                lake.commit(text_tag_scores.SPEC.name, actions, txn)
            run.counts.update(
                scored=report.scored,
                passed=report.passed,
                blank=report.blank,
                already=report.already,
                unembedded=report.unembedded,
                failed=len(report.failed),
            )
            run.errors += [{"item": i, "reason": r} for i, r in report.failed]
    return report
