"""``fleetmine previews``: H.264 previews back-filled for clips browsers cannot play.

A lake ingested before previews existed (or with ``FLEETMINE_PREVIEWS=0``) holds HEVC
clips its clip page cannot play. Every clip whose codec needs a preview
(:func:`ingest.preview.needs_preview`) and has none is an item; the runner sends each
batch to a :class:`PreviewStage` (sequential here, Ray tasks on a cluster), which reads
the clip's mp4, writes the preview to ``media/previews/<day>/<clip>.mp4`` and returns its
uri. One upsert of those ``clips`` rows (``preview_uri`` set), tagged
``Txn("previews", n)``, publishes them: a retry after a lost acknowledgement does not
write twice, and a clip whose preview failed is reported and stays without one (the
next run tries it again). The originals are never touched.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa

from ingest.preview import BROWSER_CODECS, preview_mp4
from jobs.runner import Runner, StageSpec, default_runner
from jobs.runs import one_at_a_time, record_run
from storage.config import Settings
from storage.delta import Txn
from storage.lake import Lake
from storage.sql import in_list, in_set

__all__ = ["PreviewReport", "PreviewStage", "run_previews"]

APP_ID = "previews"


@dataclass
class PreviewReport:
    run_id: str
    made: int = 0
    already: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


class PreviewStage:
    """Makes the previews of a batch of clips: ``(clip_id, preview_uri | None, why)`` each."""

    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(self, lake: Lake):
        self.lake = lake

    def setup(self) -> None:
        pass

    def process_batch(self, items: list[dict[str, Any]]) -> list[tuple[str, str | None, str]]:
        return [self._one(c) for c in items]

    def _one(self, clip: dict[str, Any]) -> tuple[str, str | None, str]:
        from ingest.video import VideoError

        src = self.lake.locate(clip["video_uri"] or "")
        if src is None:
            return clip["clip_id"], None, "its video is not in the lake"
        try:
            mp4 = src.fs.cat_file(src.path)
            blob = preview_mp4(mp4, int(clip.get("rotation_deg") or 0))
        except (OSError, VideoError) as exc:
            return clip["clip_id"], None, str(exc)
        out = self.lake.root.join("media", "previews", f"{clip['date']:%Y-%m-%d}", f"{clip['clip_id']}.mp4")
        out.fs.makedirs(posixpath.dirname(out.path), exist_ok=True)
        out.fs.pipe_file(out.path, blob)
        return clip["clip_id"], out.uri, ""


def run_previews(
    settings: Settings,
    runner: Runner | None = None,
    batch_size: int = 8,
    on_plan: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> PreviewReport:
    """``on_plan(n)``: how many clips need one; ``on_batch(k)``: k more done (progress)."""
    lake = Lake.from_settings(settings)
    with one_at_a_time(lake, APP_ID):
        number = lake.last_run_number(APP_ID, ["clips"]) + 1
        report = PreviewReport(f"previews-{number:06d}")
        playable = in_list(sorted(BROWSER_CODECS))
        todo = lake.read(
            "clips",
            columns=["clip_id", "date", "video_uri", "rotation_deg"],
            where=f"preview_uri IS NULL AND codec IS NOT NULL AND codec NOT IN ({playable})",
        ).to_pylist()
        report.already = lake.read("clips", columns=["clip_id"], where="preview_uri IS NOT NULL").num_rows
        if on_plan is not None:
            on_plan(len(todo))
        if not todo:
            return report
        runner = runner or default_runner(settings.ray_address)
        with record_run(lake, report.run_id, "previews", {}) as run:
            stage = StageSpec(PreviewStage, (lake,))
            made: dict[str, str] = {}
            done = (lambda o: on_batch(1)) if on_batch is not None else None
            for o in runner.map(stage, todo, batch_size=batch_size, on_outcome=done):
                if o.result is None:
                    report.failed.append((o.item["clip_id"], str(o.error)))
                    continue
                cid, uri, why = o.result
                if uri is None:
                    report.failed.append((cid, why))
                else:
                    made[cid] = uri
            if made:
                rows = lake.read("clips", where=in_set("clip_id", sorted(made)))
                uris = pa.array([made[c] for c in rows.column("clip_id").to_pylist()], pa.string())
                rows = rows.set_column(rows.schema.get_field_index("preview_uri"), "preview_uri", uris)
                lake.upsert("clips", rows, Txn(APP_ID, number))
            report.made = len(made)
            run.counts.update(made=report.made, already=report.already, failed=len(report.failed))
            run.errors += [{"clip_id": c, "reason": r} for c, r in report.failed]
    return report
