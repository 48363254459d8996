"""``python -m tests.fleetmine_reader.rss MANIFEST WORLD RANK``: parse the manifest, then
read rank RANK of WORLD to its epoch's end, sampling RSS every 2 ms; prints a JSON line
with the peak RSS above the parsed manifest's."""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time

from fleetmine_reader import ReaderConfig, ShardReader, load_manifest

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def main() -> None:
    path, world, rank = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    manifest = load_manifest(path)
    gc.collect()
    base = rss()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    reader = ShardReader(manifest, ReaderConfig(seed=1, rank=rank, world_size=world))
    samples = sum(1 for _ in reader.iterate(0))
    shards = len(reader.work(0))
    stop.set()
    t.join()
    peak[0] = max(peak[0], rss())
    print(
        json.dumps(
            {
                "samples": samples,
                "shards": shards,
                "manifest_mb": base / 2**20,
                "peak_above_manifest_mb": (peak[0] - base) / 2**20,
            }
        )
    )


if __name__ == "__main__":
    main()
