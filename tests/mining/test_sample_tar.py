"""fleetmine's shard tar writer against the reference library: webdataset's ``TarWriter``
with the options the exporter used (``mtime=0``, ``encoder=False``), byte for byte."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import webdataset as wds

from mining.datasets.tar import SampleTar

SAMPLES = [
    {"__key__": "20240101-00ab", "mp4": b"\x00\x00\x00\x18ftypmp42" * 40, "json": b'{"a": 1}'},
    # many members, out of order; an empty one; an extension with dots; a metadata key
    {
        "__key__": "veh-001/2024-01-01--08-00-00",
        "signals.npy": bytes(range(256)) * 3,
        "front.mp4": b"",
        "json": b"{}",
        "__url__": "not written",
        "back.mp4": b"x" * 1000,
    },
    # a name past the 100 bytes of a ustar name field (a long group key)
    {"__key__": "k" * 120, "json": bytearray(b"[1, 2, 3]")},
    {"__key__": "clip-ü-é", "json": memoryview(b"unicode key")},
]


def _ours(samples: list[dict[str, object]]) -> bytes:
    buf = io.BytesIO()
    tar = SampleTar(buf)
    for s in samples:
        tar.write(s)
    tar.close()
    return buf.getvalue()


def _reference(samples: list[dict[str, object]]) -> bytes:
    buf = io.BytesIO()
    tar = wds.TarWriter(buf, mtime=0, user="fleetmine", group="fleetmine", encoder=False)
    for s in samples:
        tar.write(s)
    tar.close()
    return buf.getvalue()


def test_shards_are_what_webdatasets_tar_writer_writes_byte_for_byte(tmp_path: Path) -> None:
    ours = _ours(SAMPLES)
    assert ours == _reference(SAMPLES)
    with tarfile.open(fileobj=io.BytesIO(ours)) as tar:
        names = tar.getnames()
    assert names[:2] == ["20240101-00ab.json", "20240101-00ab.mp4"]  # sorted extensions
    assert not any("__url__" in n for n in names)
    # and webdataset reads them back as the samples they were
    (tmp_path / "000000.tar").write_bytes(ours)
    back = list(wds.WebDataset(str(tmp_path / "000000.tar"), shardshuffle=False))
    assert [b["__key__"] for b in back] == [s["__key__"] for s in SAMPLES]
    assert back[1]["back.mp4"] == b"x" * 1000 and back[1]["front.mp4"] == b""


def test_a_sample_without_a_key_or_with_text_is_refused_as_webdataset_refuses_it() -> None:
    for bad in ({"json": b"{}"}, {"__key__": "a", "json": "{}"}):
        with pytest.raises(ValueError):
            _ours([bad])
        with pytest.raises(ValueError):
            _reference([bad])


def test_exporting_imports_neither_webdataset_nor_torch() -> None:
    code = (
        "import sys, mining.datasets.shards, mining.datasets.tar\n"
        "print(sorted(m for m in ('webdataset', 'torch') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
