"""An ingest job's driver, as its own process: ``python -m tests.reliability.driver RAW LAKE``.

Stages run in this process (the sequential runner), so a fault point that kills it
kills the whole job; the last line of stdout is the report as JSON.
"""

from __future__ import annotations

import json
import logging
import sys

from jobs.ingest_job import run_ingest
from jobs.runner import SequentialRunner
from storage import Settings


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("storage").setLevel(logging.INFO)  # "commit ... landed despite ..." shows
    raw, lake = sys.argv[1], sys.argv[2]
    report = run_ingest(raw, Settings(lake=lake), runner=SequentialRunner())
    doc = {
        "run_id": report.run_id,
        "run_number": report.run_number,
        "resumed": report.resumed,
        "ok": sorted(report.ok),
        "failed": report.failed,
        "counts": report.counts,
    }
    print(json.dumps(doc))
    sys.exit(report.exit_code)


if __name__ == "__main__":
    main()
