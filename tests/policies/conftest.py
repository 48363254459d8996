"""A small lake the policy tests share: the API tests' fleet (1 vehicle, 2 drives of a
minute, rare events planted), ingested, the baseline policy fitted and shadow-run.

Built once per run (:func:`shadowed`, under a file lock in the run's folder) and copied
to each caller: a test may write to its copy."""

from __future__ import annotations

import shutil
from pathlib import Path

from ingest.synth.fleet import SynthConfig
from jobs.ingest_job import run_ingest
from jobs.shadow_job import run_shadow
from mining.policies.baseline import train_baseline
from storage import Lake, Settings
from tests.conftest import LOCAL, locked, run_shared, synthesized

FLEET = SynthConfig(vehicles=1, drives=2, minutes=1, seed=3, rare_rate=0.2, workers=2)
BASELINE = "base"


def shadowed(dest: Path) -> Settings:
    """A copy at ``dest`` of the run's one shadowed lake (``base@1`` scored every clip);
    its settings. The raw fleet is at ``dest / "raw"``, the lake at ``dest / "lake"``."""
    built = run_shared("policies") / "shadowed"
    with locked(built):
        if not (built / ".done").exists():
            shutil.rmtree(built, ignore_errors=True)
            synthesized(built / "raw", FLEET)
            settings = Settings(lake=str(built / "lake"))
            assert run_ingest(str(built / "raw"), settings, runner=LOCAL).exit_code == 0
            train_baseline(Lake.from_settings(settings), BASELINE, settings.signal_rate_hz)
            report = run_shadow(settings, BASELINE, runner=LOCAL)
            assert report.scored > 0 and not report.failed
            (built / ".done").touch()
    shutil.copytree(built, dest, ignore=shutil.ignore_patterns(".done"), dirs_exist_ok=True)
    return Settings(lake=str(dest / "lake"))
