"""A process that ingests loads python-can (and asammdf, sympy, pandas) only when it reads
a format python-can reads; those reads then give what python-can gives (ingest/_deferred.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import can

from tests.ingest.test_can_reader_contract import valid_log

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import ingest.drive, ingest.budget, ingest.can.dbc
before = sorted(m for m in ("can", "asammdf", "sympy", "pandas") if m in sys.modules)
from ingest.can import reader_for
counts = {}
for path in sys.argv[1:]:
    res = reader_for(path).read(open(path, "rb").read(), path)
    counts[path[-4:]] = [res.frames.num_rows, res.problems]
import cantools
print(json.dumps({"before": before, "counts": counts, "tester": cantools.tester.Tester.__name__}))
"""


def test_python_can_loads_only_when_a_reader_needs_it(shared_data: Path, tmp_path: Path) -> None:
    logs = []
    for suffix in (".mf4", ".blf"):
        path = tmp_path / f"log{suffix}"
        path.write_bytes(valid_log(suffix, shared_data, tmp_path))
        logs.append(path)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, logs)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"] == [], got  # decoding a DBC (cantools) did not load python-can
    assert got["tester"] == "Tester"  # cantools' own module still loads when asked for
    for path in logs:
        want = sum(1 for _ in can.LogReader(str(path)))
        assert got["counts"][path.suffix] == [want, []], (path.suffix, got["counts"])
