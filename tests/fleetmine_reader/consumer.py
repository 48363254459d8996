"""A trainer's data loop in its own process: reads one epoch with fleetmine_reader and, after
each sample, checkpoints atomically what it consumed with the reader state that follows it.

``python -m tests.fleetmine_reader.consumer MANIFEST CHECKPOINT --seed S --epoch E
[--pause-after N] [--delay S]``: with a checkpoint present it resumes from it. With
``--pause-after`` it writes ``CHECKPOINT.paused`` after N samples and waits to be killed.
At the end it prints which heavy modules were loaded (none may be).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from fleetmine_reader import ReaderConfig, ReaderState, ShardReader, load_manifest

HEAVY = ("ray", "fastapi", "starlette", "uvicorn", "deltalake", "api", "jobs", "storage", "mining", "ingest")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("manifest")
    p.add_argument("checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epoch", type=int, default=0)
    p.add_argument("--pause-after", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0)
    a = p.parse_args()
    ckpt = Path(a.checkpoint)
    seen: list[str] = []
    state = ReaderState.start(a.epoch)
    if ckpt.exists():
        saved = json.loads(ckpt.read_text())
        seen, state = saved["seen"], ReaderState.from_json(saved["state"])
    reader = ShardReader(load_manifest(a.manifest), ReaderConfig(seed=a.seed))
    for sample in reader.iterate(state):
        seen.append(sample["__key__"])
        tmp = ckpt.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"seen": seen, "state": sample["__state__"].to_json()}))
        os.replace(tmp, ckpt)  # the model and the reader state land together, or not at all
        if a.pause_after and len(seen) == a.pause_after:
            Path(f"{ckpt}.paused").write_text(str(os.getpid()))
            time.sleep(600)
        time.sleep(a.delay)
    loaded = sorted(m for m in HEAVY if m in sys.modules)
    print(json.dumps({"done": True, "samples": len(seen), "heavy_modules": loaded}))


if __name__ == "__main__":
    main()
