"""Shadow runs next to embedding: what scoring a clip with a policy costs, per clip.

Input: a synthetic fleet (one vehicle, two drives of two minutes quick; two vehicles,
three drives each full), ingested into a scratch lake. Baseline: ``fleetmine embed``
with the builtin encoder over every clip (keyframes read and decoded, vectors written,
one commit). Ours: ``fleetmine shadow`` with the baseline policy (``policy train
--baseline``, fitted before the clock starts) over every clip (each drive's signals
read, the ONNX policy run every 0.5 s of a clip, its errors written, one commit). Both
are whole jobs under the sequential runner in this process, on the same clips; wall
milliseconds per clip, lower is better.
"""

from __future__ import annotations

import time

from fleetmine.bench import BenchContext, BenchResult, benchmark


@benchmark("shadow")
def shadow(ctx: BenchContext) -> list[BenchResult]:
    import mining.encoders.builtin  # noqa: F401  (imported before the clock, as the policy's runtime is)
    from ingest.synth.fleet import SynthConfig, synthesize
    from jobs.embed_job import run_embed
    from jobs.ingest_job import run_ingest
    from jobs.runner import SequentialRunner
    from jobs.shadow_job import run_shadow
    from mining.policies.baseline import train_baseline
    from storage.config import Settings
    from storage.errors import JobError
    from storage.lake import Lake

    cfg = SynthConfig(
        vehicles=1 if ctx.quick else 2,
        drives=2 if ctx.quick else 3,
        minutes=2.0,
        seed=29,
        rare_rate=0.1,
        duplicates=0,
        workers=1,
    )
    raw = ctx.workdir / "shadow_raw"
    synthesize(raw, cfg)
    settings = Settings(lake=str(ctx.workdir / "shadow_lake"))
    runner = SequentialRunner()
    if run_ingest(str(raw), settings, runner=runner).exit_code != 0:
        raise JobError("the shadow benchmark's synthetic fleet did not ingest")
    spec, _ = train_baseline(Lake.from_settings(settings), "bench-baseline", settings.signal_rate_hz)
    t0 = time.perf_counter()
    embedded = run_embed(settings, runner=runner)
    embed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scored = run_shadow(settings, spec.ref, runner=runner)
    shadow_s = time.perf_counter() - t0
    if embedded.failed or scored.failed or not embedded.embedded or not scored.scored:
        raise JobError(
            f"the shadow benchmark's jobs failed: embed {embedded.failed[:3]}, shadow {scored.failed[:3]}"
        )
    horizon = f"{spec.params.horizon_s:g} s horizon every {spec.params.step_s:g} s"
    return [
        BenchResult(
            f"shadow run, baseline policy ({horizon}), {scored.scored} clips, one process",
            1000 * shadow_s / scored.scored,
            1000 * embed_s / embedded.embedded,
            "ms/clip",
            "embed, builtin encoder, the same clips",
            "",
            higher_is_better=False,
        )
    ]
