"""Paths a drive names, and the decoder each drive is decoded with.

Path confinement: a drive folder is uploaded by a vehicle (or whoever holds its upload
credentials), and its ``drive.json`` names a DBC, a platform and cameras. Every path it
names stays inside its own folder (or the configured DBC directories), symlinks out of
the raw root are not followed, and no byte of a file the drive reaches ever lands in
``drives.warnings``, ``drives.error`` or the ``runs`` row (a reader token reads those).
The good drives of the same batch still land.

Decoder identity: a drive is decoded with the DBC it names, never with a DBC an earlier
drive of the same worker named (decoders are keyed by DBC content and signal map, not by
a platform name a drive.json can choose).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from ingest.discover import DriveSource
from ingest.drive import DriveIngest, DriveResult
from jobs.ingest_job import run_ingest
from storage import Lake, Settings
from storage.objectstore import Location
from tests.conftest import LOCAL, SHARED_DATA
from tests.ingest.conftest import DASHCAM, RAV4, make_drive
from tests.reliability.conftest import REPO, Figures

CANARY = "FLEETMINE_CANARY_5f1c9e"
ENV_CANARY = "FLEETMINE_ENV_CANARY_71d0aa"
# Looks like the start of a DBC (and of a log), so each parser reads into it and complains.
SECRET = f'VERSION ""\n{CANARY} AWS_SECRET_ACCESS_KEY=canary/7Hq2\n(1.0) can0 {CANARY}#00\n'
WHEELS = [f"WHEEL_SPEEDS.WHEEL_SPEED_{w}" for w in ("FL", "FR", "RL", "RR")]
SPEED_MAP = {"speed_mps": {"op": "mean", "sources": WHEELS, "divide": 3.6}}


def _need_data() -> None:
    if not (SHARED_DATA / "can" / "rav4_drive_seg40_part1.log").exists():
        pytest.skip(f"recorded data not found at {SHARED_DATA} (it lives in ../shared/data)")


def _rav4_log(lines: int | None = None) -> bytes:
    data = (SHARED_DATA / "can" / "rav4_drive_seg40_part1.log").read_bytes()
    return data if lines is None else b"\n".join(data.splitlines()[:lines]) + b"\n"


def _dbc(scale_x10: bool = False) -> bytes:
    """The RAV4 DBC, or the same with its wheel speeds' scale 10x (a different car)."""
    text = (SHARED_DATA / "dbc" / "toyota_rav4_2017_pt.dbc").read_bytes()
    return text.replace(b"(0.01,-67.67)", b"(0.1,-676.7)") if scale_x10 else text


def _secrets(tmp_path: Path) -> dict[str, Path]:
    """Files outside the raw root that a hostile drive reaches for."""
    out = tmp_path / "outside"
    out.mkdir()
    secret = out / "secret.dbc"
    secret.write_text(SECRET)
    toml = out / "evil.toml"
    toml.write_text(f'name = "evil"\ndbc = "{secret}"\n[signals.speed_mps]\nsources = ["A.B"]\n')
    drive = out / "stolen_drive"
    (drive / "can").mkdir(parents=True)
    (drive / "can" / "pt.log").write_text(SECRET)
    (drive / "drive.json").write_text(json.dumps({"dbc": str(secret), "signals": SPEED_MAP}))
    vehicle = out / "stolen_vehicle" / "d1" / "can"
    vehicle.mkdir(parents=True)
    (vehicle / "pt.log").write_text(SECRET)
    return {"secret": secret, "toml": toml, "drive": drive, "vehicle": out / "stolen_vehicle"}


def _leaked_strings() -> list[str]:
    """What must never appear in a row: the canaries, this process's environment entries,
    the host name (``../../etc/hostname``)."""
    out = [CANARY, ENV_CANARY, "AWS_SECRET_ACCESS_KEY=canary"]
    try:
        environ = Path("/proc/self/environ").read_bytes().split(b"\0")
    except OSError:
        environ = []
    out += [e.decode(errors="replace") for e in environ if len(e) >= 12 and b"=" in e[1:]]
    try:
        host = Path("/etc/hostname").read_text().strip()
    except OSError:
        host = ""
    if len(host) >= 6:
        out.append(host)
    return out


def _hostile_tree(raw: Path, tmp_path: Path) -> dict[str, str]:
    """Good drives plus one drive per hostile path; returns {drive key: what it tried}."""
    s = _secrets(tmp_path)
    log = _rav4_log(2000)
    make_drive(raw, *RAV4, {"can/pt.log": _rav4_log()}, {"platform": "toyota_rav4_2017"})
    make_drive(
        raw,
        *DASHCAM,
        {"cameras/front.mp4": SHARED_DATA / "video" / "solidWhiteRight.mp4"},
        {"start_time": "2016-08-28T21:16:08Z"},
    )
    tried: dict[str, str] = {}

    def drive(name: str, doc: dict[str, Any], what: str) -> Path:
        tried[f"evil/{name}"] = what
        return make_drive(raw, "evil", name, {"can/pt.log": log}, doc)

    depth = len(raw.resolve().parts) + 4
    dbcs = {
        "proc_environ": "/proc/self/environ",
        "etc_hostname_rel": "../../etc/hostname",
        "etc_hostname_deep": "../" * depth + "etc/hostname",
        "secret_abs": str(s["secret"]),
        "secret_rel": os.path.relpath(s["secret"], raw / "evil" / "secret_rel"),
        "secret_file_uri": f"file://{s['secret']}",
        "secret_s3_uri": "s3://some-bucket/secret.dbc",
        "home": "~/.bashrc",
        "sibling_drive": f"../../{RAV4[0]}/{RAV4[1]}/can/pt.log",
        "nul_byte": "car.dbc\0/../../etc/hostname",
    }
    for name, ref in dbcs.items():
        drive(name, {"dbc": ref, "signals": SPEED_MAP}, f"dbc {ref!r}")
    d = drive(
        "dbc_symlink", {"dbc": "car.dbc", "signals": SPEED_MAP}, "dbc: a symlink in the drive to a secret"
    )
    (d / "car.dbc").symlink_to(s["secret"])
    platforms = {
        "platform_proc": "/proc/self/environ",
        "platform_toml_abs": str(s["toml"]),
        "platform_toml_rel": "../" * depth + str(s["toml"]).lstrip("/"),
        "platform_dotdot": "../platforms/toyota_rav4_2017",
    }
    for name, ref in platforms.items():
        drive(name, {"platform": ref}, f"platform {ref!r}")
    d = make_drive(raw, "evil", "can_symlink", {}, {"platform": "toyota_rav4_2017"})
    (d / "can").mkdir()
    (d / "can" / "x.log").symlink_to(s["secret"])
    tried["evil/can_symlink"] = "can/x.log: a symlink to a file outside the raw root"
    d = make_drive(raw, "evil", "camera_symlink", {"can/pt.log": log}, {"platform": "toyota_rav4_2017"})
    (d / "cameras").mkdir()
    (d / "cameras" / "front.mp4").symlink_to(s["secret"])
    tried["evil/camera_symlink"] = "cameras/front.mp4: a symlink to a file outside the raw root"
    d = make_drive(raw, "evil", "json_symlink", {"can/pt.log": log})
    (d / "drive.json").symlink_to(s["secret"])
    tried["evil/json_symlink"] = "drive.json: a symlink to a file outside the raw root"
    (raw / "evil" / "drive_symlink").symlink_to(s["drive"])
    tried["evil/drive_symlink"] = "a drive folder that is a symlink out of the raw root"
    (raw / "evil_vehicle").symlink_to(s["vehicle"])  # not entered: no drive of it is read
    return tried


def _settings(tmp_path: Path, budgeted: bool) -> Settings:
    """Drives decoded in the budget's child process (the default) or in the worker itself."""
    if budgeted:
        return Settings(lake=str(tmp_path / "lake"))
    return Settings(lake=str(tmp_path / "lake"), drive_time_budget_s=0, drive_memory_budget_mib=0)


def _all_text(lake: Lake) -> list[str]:
    texts = []
    for r in lake.read("drives").to_pylist():
        texts += [str(r["error"] or ""), *(r["warnings"] or []), str(r["platform"] or "")]
    for r in lake.read("runs").to_pylist():
        texts += [str(r["params"] or ""), str(r["errors"] or ""), str(r["counts"] or "")]
    return texts


@pytest.mark.parametrize("budgeted", [True, False], ids=["sandboxed", "in-worker"])
def test_paths_a_drive_names_stay_in_its_folder(
    tmp_path: Path, figures: Figures, monkeypatch: pytest.MonkeyPatch, budgeted: bool
) -> None:
    _need_data()
    monkeypatch.setenv(ENV_CANARY, "leaked-if-seen")  # in the sandbox child's /proc/self/environ
    raw = tmp_path / "raw"
    tried = _hostile_tree(raw, tmp_path)
    settings = _settings(tmp_path, budgeted)
    report = run_ingest(str(raw), settings, runner=LOCAL)
    lake = Lake.from_settings(settings)
    rows = {f"{r['vehicle_id']}/{r['drive']}": r for r in lake.read("drives").to_pylist()}
    leaks = [s for s in _leaked_strings() for t in _all_text(lake) if s in t]
    report_text = json.dumps([report.failed, report.warned])
    leaks += [s for s in _leaked_strings() if s in report_text]
    assert not leaks, f"outside bytes in the lake's rows: {sorted(set(leaks))[:3]}"
    good = ["/".join(RAV4), "/".join(DASHCAM)]
    assert all(rows[k]["status"] == "ok" for k in good), {k: rows[k]["error"] for k in good}
    rav4 = lake.read("signals", where=f"drive_id = '{rows['/'.join(RAV4)]['drive_id']}'")
    assert rav4.num_rows > 500
    missing = sorted(set(tried) - set(rows))
    assert not missing, f"hostile drives not recorded: {missing}"
    assert not [k for k in rows if k.startswith("evil_vehicle/")], "a linked vehicle folder was entered"
    # Each hostile drive says what was refused; none is decoded with what it pointed at.
    unexplained = [k for k in tried if not (rows[k]["warnings"] or rows[k]["error"])]
    assert not unexplained, unexplained
    decoded_evil = [
        k
        for k in tried
        if lake.read("signals", where=f"drive_id = '{rows[k]['drive_id']}'").num_rows
        and rows[k]["platform"] != "toyota_rav4_2017"
    ]
    assert not decoded_evil, decoded_evil
    figures(
        group="path confinement",
        fault="drive.json dbc/platform naming files outside the drive (/proc/self/environ, "
        "../../etc/hostname, absolute, file://, s3://, ~, NUL, a sibling drive, a symlinked dbc), "
        "symlinked can log, camera, "
        f"drive.json, drive folder and vehicle folder ({'sandboxed' if budgeted else 'in-worker'} decode)",
        cases=len(tried) + 1,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{len(tried)} hostile drives recorded with a warning or error saying what was refused, "
        "the linked vehicle folder not entered; "
        f"{len(leaks)} bytes of outside files in drives/runs rows; {len(good)} good drives in the batch ok",
    )


def test_a_dbc_in_the_drive_folder_and_in_dbc_dirs_decodes(tmp_path: Path, figures: Figures) -> None:
    """The confinement keeps what is legitimate: ``dbc`` naming a file of the drive, in a
    subfolder of it, or in a configured DBC directory."""
    _need_data()
    raw = tmp_path / "raw"
    dbc_dir = tmp_path / "dbcs"
    dbc_dir.mkdir()
    (dbc_dir / "rav4.dbc").write_bytes(_dbc())
    log = _rav4_log(4000)
    make_drive(
        raw, "own", "d1", {"can/pt.log": log, "car.dbc": _dbc()}, {"dbc": "car.dbc", "signals": SPEED_MAP}
    )
    make_drive(
        raw,
        "sub",
        "d1",
        {"can/pt.log": log, "dbc/car.dbc": _dbc()},
        {"dbc": "dbc/car.dbc", "signals": SPEED_MAP},
    )
    make_drive(raw, "dirs", "d1", {"can/pt.log": log}, {"dbc": "rav4.dbc", "signals": SPEED_MAP})
    settings = Settings(lake=str(tmp_path / "lake"), dbc_dirs=(str(dbc_dir),))
    report = run_ingest(str(raw), settings, runner=LOCAL)
    assert report.exit_code == 0, report.failed
    lake = Lake.from_settings(settings)
    sig = lake.read("signals", columns=["drive_id", "speed_mps"]).to_pylist()
    per_drive = {r["drive_id"] for r in sig if r["speed_mps"] is not None}
    assert len(per_drive) == 3, lake.read("drives", columns=["drive", "warnings"]).to_pylist()
    figures(
        group="path confinement",
        fault="what stays allowed: dbc naming a file of the drive, one in a subfolder of it, and one "
        "in a configured FLEETMINE_DBC_DIRS folder",
        cases=3,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{len(per_drive)} of 3 drives decoded with their DBC",
    )


@pytest.mark.s3
def test_on_s3_a_dbc_is_an_object_of_the_drive(
    tmp_path: Path, s3_options: dict[str, str], s3_bucket: str, figures: Figures
) -> None:
    """On an S3 raw tree ``dbc`` is read as an object under the drive with the raw
    tree's credentials; a local path (absolute or escaping) is never opened."""
    _need_data()
    s = _secrets(tmp_path)
    local = tmp_path / "raw"
    log = _rav4_log(4000)
    make_drive(
        local,
        "s3car",
        "good",
        {"can/pt.log": log, "car.dbc": _dbc()},
        {"dbc": "car.dbc", "signals": SPEED_MAP},
    )
    hostile = {
        "abs": str(s["secret"]),
        "rel": "../" * 12 + str(s["secret"]).lstrip("/"),
        "file_uri": f"file://{s['secret']}",
        "other_bucket": f"s3://{s3_bucket}-other/x.dbc",
        "proc": "/proc/self/environ",
    }
    for name, ref in hostile.items():
        make_drive(local, "s3evil", name, {"can/pt.log": log}, {"dbc": ref, "signals": SPEED_MAP})
    raw = Location(f"s3://{s3_bucket}/raw", s3_options)
    raw.fs.put(str(local) + "/", raw.path, recursive=True)
    settings = Settings(lake=str(tmp_path / "lake"), storage_options=s3_options)
    run_ingest(raw.uri, settings, runner=LOCAL)
    lake = Lake.from_settings(settings)
    rows = {r["drive"]: r for r in lake.read("drives").to_pylist()}
    leaks = [x for x in _leaked_strings() for t in _all_text(lake) if x in t]
    assert not leaks
    good = lake.read("signals", where=f"drive_id = '{rows['good']['drive_id']}'")
    assert good.num_rows > 20 and good.column("speed_mps").drop_null().to_pylist(), rows["good"]["warnings"]
    undecoded = [n for n in hostile if rows[n]["platform"] is None and rows[n]["warnings"]]
    assert len(undecoded) == len(hostile)
    figures(
        group="path confinement",
        fault="S3 raw tree: drive.json dbc as a local absolute path, an escaping relative path, file://, "
        "another bucket, /proc/self/environ; and a good drive with its DBC as an object",
        cases=len(hostile) + 1,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{len(undecoded)} of {len(hostile)} hostile refused with a warning, 0 local files opened, "
        "the good drive's DBC read from S3 and decoded",
    )


# -- the raw root itself --------------------------------------------------------------------


def _ingest_cli(raw: str, lake: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetmine", "ingest", raw, "--lake", str(lake)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("FLEETMINE_")},
    )


def test_ingest_of_a_missing_or_misplaced_raw_root_fails(tmp_path: Path, figures: Figures) -> None:
    _need_data()
    raw = tmp_path / "raw"
    make_drive(raw, *RAV4, {"can/pt.log": _rav4_log(500)}, {"platform": "toyota_rav4_2017"})
    make_drive(raw, "car2", "d1", {"cameras/front.mp4": b"x", "can/pt.log": _rav4_log(500)})
    cases = {
        "missing": str(tmp_path / "no" / "such" / "dir"),
        "a file": str(raw / RAV4[0] / RAV4[1] / "can" / "pt.log"),
        "a vehicle folder": str(raw / RAV4[0]),
        "a drive folder": str(raw / RAV4[0] / RAV4[1]),
    }
    refused = {}
    for what, path in cases.items():
        out = _ingest_cli(path, tmp_path / "lake")
        refused[what] = (out.returncode, (out.stdout + out.stderr)[-400:])
    assert all(rc not in (0, 3) for rc, _ in refused.values()), refused
    assert "above" in refused["a vehicle folder"][1] and "above" in refused["a drive folder"][1], refused
    lake = Lake(str(tmp_path / "lake"))
    drives = lake.read("drives").to_pylist() if (tmp_path / "lake").exists() else []
    assert not [d for d in drives if d["drive"] in ("can", "cameras")]
    figures(
        group="path confinement",
        fault="fleetmine ingest on a missing path, a file, a vehicle folder and a drive folder "
        "instead of the raw root",
        cases=len(cases),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{sum(rc not in (0, 3) for rc, _ in refused.values())} of {len(cases)} refused with a "
        f"non-zero exit and a message; {len(drives)} drive rows recorded",
    )


# -- decoder identity ----------------------------------------------------------------------


def _truth() -> tuple[np.ndarray, np.ndarray]:
    with open(SHARED_DATA / "can" / "rav4_drive_seg40_part1_truth.csv") as f:
        rows = [(float(r["timestamp"]), float(r["speed_mps"])) for r in csv.DictReader(f)]
    t, v = (np.array(c) for c in zip(*rows, strict=True))
    return t, v


def _speed_error(lake: Lake, drive_id: str, factor: float = 1.0) -> float:
    """Largest gap between a drive's speed and the truth (times ``factor``)."""
    sig = lake.read("signals", columns=["t", "speed_mps"], where=f"drive_id = '{drive_id}'").sort_by("t")
    t = sig.column("t").cast(pa.int64()).to_numpy() / 1e6
    v = sig.column("speed_mps").to_numpy(zero_copy_only=False).astype(float)
    tt, vv = _truth()
    inside = (t >= tt[0]) & (t <= tt[-1]) & ~np.isnan(v)
    assert inside.sum() > 500
    return float(np.max(np.abs(v[inside] - factor * np.interp(t[inside], tt, vv))))


@pytest.mark.parametrize("budgeted", [True, False], ids=["sandboxed", "in-worker"])
def test_each_drive_is_decoded_with_its_own_dbc(tmp_path: Path, figures: Figures, budgeted: bool) -> None:
    """Two drives, each with its own DBC (wheel-speed scales 10x apart), in one worker; and a
    drive whose custom DBC claims the name ``toyota_rav4_2017`` ingested before a real one."""
    _need_data()
    raw = tmp_path / "raw"
    log = _rav4_log()
    make_drive(
        raw, "a_car", "d1", {"can/pt.log": log, "car.dbc": _dbc()}, {"dbc": "car.dbc", "signals": SPEED_MAP}
    )
    make_drive(
        raw,
        "b_car",
        "d1",
        {"can/pt.log": log, "car.dbc": _dbc(True)},
        {"dbc": "car.dbc", "signals": SPEED_MAP},
    )
    make_drive(
        raw,
        "a_poison",
        "d1",
        {"can/pt.log": log, "car.dbc": _dbc(True)},
        {"dbc": "car.dbc", "platform_name": "toyota_rav4_2017", "signals": SPEED_MAP},
    )
    make_drive(raw, *RAV4, {"can/pt.log": log}, {"platform": "toyota_rav4_2017"})
    settings = _settings(tmp_path, budgeted)
    report = run_ingest(str(raw), settings, runner=LOCAL)
    assert report.exit_code == 0, report.failed
    lake = Lake.from_settings(settings)
    ids = {r["vehicle_id"]: r["drive_id"] for r in lake.read("drives").to_pylist()}
    errors = {
        "a_car (own DBC)": _speed_error(lake, ids["a_car"]),
        "b_car (own DBC, 10x scale)": _speed_error(lake, ids["b_car"], 10.0),
        "a_poison (10x, named toyota_rav4_2017)": _speed_error(lake, ids["a_poison"], 10.0),
        "rav4 (shipped platform)": _speed_error(lake, ids[RAV4[0]]),
    }
    wrong = {k: e for k, e in errors.items() if e > 1e-2}
    assert not wrong, wrong
    figures(
        group="decoder identity",
        fault="in one worker: two drives with their own DBCs 10x apart, then a custom DBC named "
        f"toyota_rav4_2017 before a real RAV4 drive ({'sandboxed' if budgeted else 'in-worker'} decode)",
        cases=len(errors),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{len(errors) - len(wrong)} of {len(errors)} drives decoded with their own DBC "
        f"(largest gap to the recorded ground-truth speed, interpolated: {max(errors.values()):.1e} m/s)",
    )


def test_a_dbc_changed_between_runs_is_read_again(tmp_path: Path, figures: Figures) -> None:
    """Same drive path, new DBC content (``--force``): decoded with the new one."""
    _need_data()
    raw = tmp_path / "raw"
    d = make_drive(
        raw,
        "car",
        "d1",
        {"can/pt.log": _rav4_log(), "car.dbc": _dbc()},
        {"dbc": "car.dbc", "signals": SPEED_MAP},
    )
    settings = Settings(lake=str(tmp_path / "lake"), drive_time_budget_s=0, drive_memory_budget_mib=0)
    assert run_ingest(str(raw), settings, runner=LOCAL).exit_code == 0
    (d / "car.dbc").write_bytes(_dbc(True))
    assert run_ingest(str(raw), settings, runner=LOCAL, force=True).exit_code == 0
    lake = Lake.from_settings(settings)
    (row,) = lake.read("drives").to_pylist()
    gap = _speed_error(lake, row["drive_id"], 10.0)
    figures(
        group="decoder identity",
        fault="one drive re-ingested (--force) after its DBC's content changed (scale 10x), same path",
        cases=1,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"decoded with the new DBC (gap to 10x the ground-truth speed: {gap:.1e} m/s)",
    )
    assert gap < 1e-2


# -- one hostile drive beside good ones ---------------------------------------------------

MIB = 1 << 20


def _good_drives(raw: Path, video: bool = False) -> list[str]:
    """The RAV4 CAN drive (and the dashcam video drive): they must land ``ok`` whatever
    their neighbours hold."""
    make_drive(raw, *RAV4, {"can/pt.log": _rav4_log(2000)}, {"platform": "toyota_rav4_2017"})
    good = ["/".join(RAV4)]
    if video:
        make_drive(
            raw,
            *DASHCAM,
            {"cameras/front.mp4": SHARED_DATA / "video" / "solidWhiteRight.mp4"},
            {"start_time": "2016-08-28T21:16:08Z"},
        )
        good.append("/".join(DASHCAM))
    return good


def _hostile_json_tree(raw: Path, tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    """Drives whose drive.json (or file names) once failed the whole job; returns
    {drive key: what it tried} and the folders that cannot be recorded at all (names
    that are not UTF-8: skipped by discovery, with a logged warning)."""
    log = _rav4_log(300)
    tried: dict[str, str] = {}

    def drive(name: str, doc_text: str | bytes, what: str) -> Path:
        d = make_drive(raw, "hostile", name, {"can/pt.log": log})
        data = doc_text.encode() if isinstance(doc_text, str) else doc_text
        (d / "drive.json").write_bytes(data)
        tried[f"hostile/{name}"] = what
        return d

    drive("deep_list", "[" * 1000 + "]" * 1000, "drive.json: a list nested 1,000 deep")
    drive("deep_dict", '{"a":' * 100_000 + "1" + "}" * 100_000, "drive.json: an object nested 100,000 deep")
    drive(
        "deep_cameras",
        json.dumps({"platform": "toyota_rav4_2017", "cameras": {"front": {"intrinsics": "X"}}}).replace(
            '"X"', "[" * 500 + "]" * 500
        ),
        "drive.json: camera intrinsics nested 500 deep (parses, then recursed into)",
    )
    big = json.dumps({"platform": "toyota_rav4_2017", "note": "x" * (21 * MIB)})
    drive("big", big, f"drive.json of {len(big) / MIB:.0f} MiB")
    drive(
        "start_year_0",
        json.dumps({"platform": "toyota_rav4_2017", "start_time": "0001-01-01T00:00:00+23:59"}),
        "drive.json start_time 0001-01-01T00:00:00+23:59 (before year 1 in UTC)",
    )
    d = make_drive(raw, "hostile", "bad_file_name", {"can/pt.log": log}, {"platform": "toyota_rav4_2017"})
    (Path(os.fsdecode(bytes(d) + b"/can/x\xff.log"))).write_bytes(log)
    tried["hostile/bad_file_name"] = "can/x\\xff.log: a file name that is not UTF-8"
    undecodable = []
    for vehicle, drv in ((b"vb\xff", b"d1"), (b"vgood", b"d\xfe")):
        folder = Path(os.fsdecode(bytes(raw) + b"/" + vehicle + b"/" + drv))
        make_drive(folder.parent, folder.name, "", {"can/pt.log": log}, {"platform": "toyota_rav4_2017"})
        undecodable.append(repr(vehicle + b"/" + drv))
    return tried, undecodable


@pytest.mark.parametrize("mode", ["sandboxed", "in-worker", "ray"])
def test_a_hostile_drive_json_or_file_name_fails_only_its_drive(
    tmp_path: Path,
    figures: Figures,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
    mode: str,
) -> None:
    """A drive.json nested 1,000+ deep, one of 21 MiB, a start_time before year 1 in UTC and
    names that are not UTF-8 once failed the whole job (every drive lost, again on each retry,
    the run row left ``running``). Now: the job finishes, the good drives land, each hostile
    drive is recorded with a warning naming what was refused, the run row is settled."""
    _need_data()
    runner: Any = LOCAL
    if mode == "ray":
        from jobs.runner import RayRunner

        request.getfixturevalue("ray_local")
        runner = RayRunner(max_retries=0)
    raw = tmp_path / "raw"
    good = _good_drives(raw)
    tried, undecodable = _hostile_json_tree(raw, tmp_path)
    settings = _settings(tmp_path, mode == "sandboxed")
    with caplog.at_level("WARNING", logger="ingest.discover"):
        report = run_ingest(str(raw), settings, runner=runner)
    lake = Lake.from_settings(settings)
    rows = {f"{r['vehicle_id']}/{r['drive']}": r for r in lake.read("drives").to_pylist()}
    assert all(rows[k]["status"] == "ok" for k in good), {k: rows[k]["error"] for k in good}
    missing = sorted(set(tried) - set(rows))
    assert not missing, f"hostile drives not recorded: {missing}"
    explained = {
        k: rows[k]["error"] or "; ".join(rows[k]["warnings"] or [])
        for k in tried
        if "drive.json" in (rows[k]["error"] or "") + " ".join(rows[k]["warnings"] or [])
        or "UTF-8" in " ".join(rows[k]["warnings"] or [])
    }
    assert set(explained) == set(tried), sorted(set(tried) - set(explained))
    # Nothing is lost that could land: the CAN logs of drives with a refused drive.json still do.
    landed = [k for k in tried if rows[k]["n_can_frames"]]
    assert len(landed) == len(tried), {k: rows[k]["error"] for k in tried if k not in landed}
    assert "1 MiB" in explained["hostile/big"], explained["hostile/big"]
    assert "start_time" in explained["hostile/start_year_0"]
    assert "x\\xff" not in json.dumps(list(explained.values())) and "\udcff" not in str(explained)
    runs_rows = lake.read("runs").to_pylist()
    assert [r["status"] for r in runs_rows] == ["succeeded"], runs_rows
    skipped_logged = [m for m in caplog.messages if "not valid UTF-8" in m]
    assert len(skipped_logged) >= len(undecodable), caplog.messages
    assert len(rows) == len(good) + len(tried)
    figures(
        group="path confinement",
        fault="one hostile drive beside good ones: drive.json nested 1,000 and 100,000 deep, camera "
        "intrinsics nested 500 deep, a 21 MiB drive.json, start_time 0001-01-01T00:00:00+23:59, a "
        f"file name and two folder names that are not UTF-8 ({mode} decode)",
        cases=len(tried) + len(undecodable),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"job finished (run {runs_rows[0]['status']}, exit {report.exit_code}); {len(good)} good "
        f"drive ok; {len(explained)} of {len(tried)} hostile drives recorded with the refusal named and "
        f"their CAN frames kept; {len(undecodable)} folders with undecodable names skipped with a "
        "logged warning",
    )


def test_a_hard_linked_file_is_read_but_never_quoted(tmp_path: Path, figures: Figures) -> None:
    """Hard links cannot be told from the drive's own files (realpath sees no link), and
    rsync'd or snapshot trees hold legitimate ones, so they are read like any file (see
    docs/security.md, Raw trees). A hard link to a file outside the raw root only reads
    what its maker could already read (fs.protected_hardlinks); its bytes never reach a
    warning, an error or the runs row, and a log hard-linked between two drives decodes."""
    _need_data()
    raw = tmp_path / "raw"
    good = _good_drives(raw)
    s = _secrets(tmp_path)
    d = make_drive(raw, "evil", "can_hardlink", {}, {"platform": "toyota_rav4_2017"})
    (d / "can").mkdir()
    os.link(s["secret"], d / "can" / "x.log")
    d = make_drive(raw, "evil", "json_hardlink", {"can/pt.log": _rav4_log(300)})
    os.link(s["secret"], d / "drive.json")
    twin = make_drive(raw, "rsync", "d1", {}, {"platform": "toyota_rav4_2017"})
    (twin / "can").mkdir()
    os.link(raw / RAV4[0] / RAV4[1] / "can" / "pt.log", twin / "can" / "pt.log")  # rsync --link-dest
    settings = _settings(tmp_path, False)
    run_ingest(str(raw), settings, runner=LOCAL)
    lake = Lake.from_settings(settings)
    rows = {f"{r['vehicle_id']}/{r['drive']}": r for r in lake.read("drives").to_pylist()}
    leaks = [x for x in _leaked_strings() for t in _all_text(lake) if x in t]
    assert not leaks, sorted(set(leaks))[:3]
    assert all(rows[k]["status"] == "ok" for k in [*good, "rsync/d1"]), rows
    assert rows["rsync/d1"]["platform"] == "toyota_rav4_2017"
    assert [r["status"] for r in lake.read("runs").to_pylist()] == ["partial"]
    figures(
        group="path confinement",
        fault="a can log and a drive.json hard-linked to a file outside the raw root (realpath cannot "
        "see it), and a CAN log hard-linked between two drives as rsync --link-dest leaves it",
        cases=3,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{len(leaks)} bytes of the outside file in drives/runs rows; the hard-linked drive "
        f"decoded ({rows['rsync/d1']['n_can_frames']} frames); hard links are allowed by design "
        "(docs/security.md)",
    )


# -- extreme but valid values --------------------------------------------------------------


def _extreme_tree(raw: Path) -> dict[str, tuple[str, str]]:
    """Drives with values that are valid JSON numbers and ISO times but far outside any
    drive's: {drive key: (what was tried, the key the warning must name)}."""
    video = SHARED_DATA / "video" / "solidWhiteRight.mp4"
    log = _rav4_log(300)
    rav4 = {"platform": "toyota_rav4_2017"}
    tried: dict[str, tuple[str, str]] = {}

    def drive(name: str, files: dict[str, Path | bytes], doc: dict[str, Any], what: str, key: str) -> None:
        make_drive(raw, "extreme", f"2016-08-28--21-16-08--{name}", files, doc)
        tried[f"extreme/2016-08-28--21-16-08--{name}"] = (what, key)

    drive(
        "future",
        {"cameras/front.mp4": video},
        {"start_time": "9999-12-31T23:59:59Z"},
        "start_time 9999-12-31T23:59:59Z",
        "start_time",
    )
    drive(
        "can_future",
        {"can/pt.log": b"(999999999999.000000) can0 0AA#0011223344556677\n" + log},
        rav4,
        "a candump line at 999999999999.000000",
        "CAN frames",
    )
    # JSON integers have no bound: 10**20 once raised TypeError in np.isfinite, 10**400
    # is past any float
    for value in (1e300, 1e308, -1e308, 10**20, -(10**400)):
        drive(
            f"offset_{value:.0e}" if isinstance(value, float) else f"offset_int{len(str(value))}",
            {"can/pt.log": log},
            {**rav4, "can_time_offset_s": value},
            f"can_time_offset_s {value:g}"
            if isinstance(value, float)
            else f"can_time_offset_s {len(str(value))}-digit int",
            "can_time_offset_s",
        )
    for value in (1e300, 10**20):
        drive(
            f"cam_offset_{type(value).__name__}",
            {"cameras/front.mp4": video},
            {"start_time": "2016-08-28T21:16:08Z", "cameras": {"front": {"offset_s": value}}},
            f"cameras.front.offset_s {value}",
            "offset_s",
        )
    drive(
        "cam_start",
        {"cameras/front.mp4": video},
        {"start_time": "2016-08-28T21:16:08Z", "cameras": {"front": {"start_time": "9999-12-31T23:59:59Z"}}},
        "cameras.front.start_time 9999-12-31T23:59:59Z",
        "start_time",
    )
    return tried


def test_extreme_times_and_offsets_fall_back_and_land(tmp_path: Path, figures: Figures) -> None:
    """Times past 2200 (or before 1970) and offsets past a day once failed their drive with
    an unexplained ``OverflowError while decoding``. Now each is refused with a warning
    naming the key, the next time source is used, and the drive lands ``ok``."""
    _need_data()
    raw = tmp_path / "raw"
    good = _good_drives(raw)
    tried = _extreme_tree(raw)
    settings = _settings(tmp_path, False)
    report = run_ingest(str(raw), settings, runner=LOCAL)
    lake = Lake.from_settings(settings)
    rows = {f"{r['vehicle_id']}/{r['drive']}": r for r in lake.read("drives").to_pylist()}
    assert all(rows[k]["status"] == "ok" for k in good), {k: rows[k]["error"] for k in good}
    not_ok = {k: rows[k]["error"] for k in tried if rows[k]["status"] != "ok"}
    assert not not_ok, not_ok
    unnamed = {
        k: rows[k]["warnings"]
        for k, (_, key) in tried.items()
        if not any(key in w for w in rows[k]["warnings"])
    }
    assert not unnamed, unnamed
    bounded = [
        k
        for k in tried
        if dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        <= rows[k]["start_time"]
        < dt.datetime(2200, 1, 1, tzinfo=dt.UTC)
    ]
    assert len(bounded) == len(tried)
    clips_t = lake.read("clips", columns=["drive_id", "start_time", "end_time"]).to_pylist()
    assert all(c["end_time"].year < 2200 for c in clips_t)
    figures(
        group="hostile input",
        fault="extreme but valid values: start_time 9999-12-31T23:59:59Z, a candump time of "
        "999999999999.0, can_time_offset_s 1e300/1e308/-1e308/10**20/-10**400, a camera's offset_s "
        "1e300 and 10**20 and "
        "start_time 9999-12-31",
        cases=len(tried),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{len(tried) - len(not_ok)} of {len(tried)} drives ok with a warning naming the key, "
        f"start times within 1970..2200 ({len(bounded)}); {len(good)} good drive ok; exit "
        f"{report.exit_code}",
    )


class _UnrecordableDrive(DriveIngest):
    """A drive stage whose drives of vehicle ``hostile`` raise, and whose failure record
    raises too: what a bug nobody foresaw in both would do."""

    def process(self, src: DriveSource) -> DriveResult:
        if src.vehicle_id == "hostile":
            raise RuntimeError(CANARY)
        return super().process(src)

    def failed(self, src: DriveSource, why: str) -> DriveResult:
        raise RecursionError(CANARY)


def test_a_failure_record_that_raises_fails_only_its_drive(tmp_path: Path, figures: Figures) -> None:
    """The runner's last guard: a stage's ``failed()`` that raises (in the worker, or in the
    job's process after a worker died) leaves the item with a plain reason; the job goes on,
    the run is ``partial`` and names the drive, which has no row and is tried again next time."""
    _need_data()
    raw = tmp_path / "raw"
    good = _good_drives(raw)
    make_drive(raw, "hostile", "d1", {"can/pt.log": _rav4_log(300)}, {"platform": "toyota_rav4_2017"})
    settings = _settings(tmp_path, False)
    report = run_ingest(str(raw), settings, runner=LOCAL, stage=_UnrecordableDrive)
    assert report.exit_code == 3 and report.ok == sorted(good), report
    lake = Lake.from_settings(settings)
    rows = {f"{r['vehicle_id']}/{r['drive']}": r for r in lake.read("drives").to_pylist()}
    assert all(rows[k]["status"] == "ok" for k in good)
    (run,) = lake.read("runs").to_pylist()
    errors = json.loads(run["errors"])
    assert run["status"] == "partial" and [e["drive"] for e in errors] == ["hostile/d1"], run
    assert "RuntimeError" in errors[0]["reason"] and "RecursionError" in errors[0]["reason"]
    assert CANARY not in run["errors"]
    again = run_ingest(str(raw), settings, runner=LOCAL)
    assert again.ok == ["hostile/d1"], again
    figures(
        group="path confinement",
        fault="a drive whose stage raises and whose failure record (failed()) raises too",
        cases=1,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"job finished, run {run['status']} naming {len(errors)} drive with both exceptions' "
        f"types (no text); {len(good)} good drive ok; the next ingest landed it ({len(again.ok)} ok)",
    )
