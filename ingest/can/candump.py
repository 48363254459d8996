"""candump -L logs (``(1533226487.000013) can0 2C1#0014DF14BBCA3A91``), parsed in bulk.

Arrow's multithreaded CSV reader splits the lines into three fields, RE2 checks
each field's shape, and the hex ids and payloads are decoded with numpy over the
string buffers, so no Python code runs per frame. Lines that do not look like
frames are counted and reported, never fatal: the frames after a garbled line
are kept.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from ingest.interfaces import FRAME_SCHEMA, CanReadResult

_TS = r"^\(\d{1,12}\.\d{1,9}\)$"
_FRAME = r"^[0-9A-Fa-f]{1,8}#(#[0-9A-Fa-f])?(([0-9A-Fa-f]{2}){0,64}|R\d?)$"
_ERR_FLAG = 0x20000000
_LUT = np.zeros(256, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _LUT[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _LUT[_c] = 10 + _i
_HEX = np.zeros(256, np.uint8)
_HEX[list(b"0123456789abcdefABCDEF")] = 1


def _buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset : arr.offset + len(arr) + 1]
    values = np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] else np.zeros(0, np.uint8)
    return offsets.astype(np.int64), values


def _fast_shape_check(ts: pa.Array, frame: pa.Array) -> bool:
    """True when every row is plainly well-formed (the common case), without regexes.

    Checks ``(digits.digits)`` timestamps by a float cast plus the parentheses, and
    ``HEX#HEX`` frames of even payload length by character classes over the
    buffer. Anything unusual (FD, remote, errors of any kind) returns False and
    the caller falls back to the exact regexes.
    """
    t_off, t_val = _buffers(ts)
    if len(ts) == 0 or (t_off[1:] - t_off[:-1]).min() < 3:
        return False
    if (t_val[t_off[:-1]] != ord("(")).any() or (t_val[t_off[1:] - 1] != ord(")")).any():
        return False
    offsets, values = _buffers(frame)
    hashes = np.flatnonzero(values == ord("#"))
    if len(hashes) != len(frame):
        return False
    rows = np.searchsorted(offsets, hashes, side="right") - 1
    if (np.diff(rows) != 1).any() or rows[0] != 0:
        return False
    id_len = hashes - offsets[:-1]
    data_len = offsets[1:] - hashes - 1
    if id_len.min() < 1 or id_len.max() > 8 or (data_len % 2).any() or data_len.max() > 128:
        return False
    non_hex = np.flatnonzero(_HEX[values] == 0)
    return len(non_hex) == len(hashes) and bool((non_hex == hashes).all())


def _fast_seconds(ts: pa.Array, frame: pa.Array) -> pa.Array | None:
    if not _fast_shape_check(ts, frame):
        return None
    try:
        return pc.cast(pc.utf8_slice_codeunits(ts, 1, -1), pa.float64())
    except pa.ArrowInvalid:
        return None


def _parse_frames(frame: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, pa.Array, np.ndarray]:
    """ids, extended flags, FD flags, payloads and remote flags of ``ID#DATA`` strings."""
    offsets, values = _buffers(frame)
    n = len(frame)
    starts = offsets[:-1]
    hashes = np.flatnonzero(values == ord("#"))
    if len(hashes) == n:  # one '#' per row (no FD frames): the hashes are the rows'
        hashpos = hashes
    else:
        rows = np.searchsorted(offsets, hashes, side="right") - 1
        hashpos = hashes[np.flatnonzero(np.diff(rows, prepend=-1))]  # first '#' of each row
    id_len = hashpos - starts
    nib = _LUT[values]
    k = np.arange(1, 9)
    digit_at = hashpos[:, None] - k[None, :]  # the id's k-th hex digit from the right
    digits = np.where(k[None, :] <= id_len[:, None], nib[np.maximum(digit_at, 0)], 0).astype(np.int64)
    ids = (digits << (4 * (k - 1))).sum(axis=1)
    is_fd = (hashpos + 1 < offsets[1:]) & (values[np.minimum(hashpos + 1, len(values) - 1)] == ord("#"))
    dstart = hashpos + 1 + np.where(is_fd, 2, 0)
    dlen = offsets[1:] - dstart
    remote = (dlen > 0) & (values[np.minimum(dstart, len(values) - 1)] == ord("R"))
    dlen = np.where(remote, 0, dlen)
    nbytes = dlen // 2
    total = int(nbytes.sum())
    if n and (nbytes == nbytes[0]).all():  # the usual log: every payload the same length
        pair_start = (dstart[:, None] + 2 * np.arange(int(nbytes[0]))[None, :]).ravel()
    else:
        pair_start = np.repeat(dstart - 2 * (np.cumsum(nbytes) - nbytes), nbytes) + 2 * np.arange(total)
    payload = (nib[pair_start] << 4) | nib[pair_start + 1]
    out_offsets = np.zeros(n + 1, np.int32)
    np.cumsum(nbytes, out=out_offsets[1:])
    data = pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(out_offsets), pa.py_buffer(payload.tobytes())]
    )
    return ids, id_len > 3, is_fd, data, remote


class CandumpReader:
    suffixes: tuple[str, ...] = (".log", ".candump")

    def read(self, data: bytes, name: str) -> CanReadResult:
        result = CanReadResult(FRAME_SCHEMA.empty_table())
        wrong_fields: list[str] = []

        def on_bad_row(row: pcsv.InvalidRow) -> str:
            wrong_fields.append(row.text or "")
            return "skip"

        if not data.isascii():  # candump is ASCII; garbage bytes must not break the parser
            data = data.decode("utf-8", errors="replace").encode("ascii", errors="replace")
        try:
            table = pcsv.read_csv(
                pa.BufferReader(data),
                read_options=pcsv.ReadOptions(column_names=["ts", "bus", "frame"], block_size=1 << 24),
                parse_options=pcsv.ParseOptions(
                    delimiter=" ", quote_char=False, invalid_row_handler=on_bad_row, ignore_empty_lines=True
                ),
                convert_options=pcsv.ConvertOptions(
                    column_types={"ts": pa.string(), "bus": pa.string(), "frame": pa.string()}
                ),
            )
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            result.note(f"{name}: not a candump log ({exc})")
            return result
        for text in wrong_fields:
            result.note(f"{name}: not a candump frame: {text[:80]!r}")
        ts = table.column("ts").combine_chunks()
        frame = table.column("frame").combine_chunks()
        seconds = _fast_seconds(ts, frame)
        if seconds is None:  # something is unusual: check every field exactly
            ok = pc.fill_null(
                pc.and_(pc.match_substring_regex(ts, _TS), pc.match_substring_regex(frame, _FRAME)), False
            )
            for i in pc.indices_nonzero(pc.invert(ok)).to_pylist():
                line = f"{ts[i]} {table.column('bus')[i]} {frame[i]}"
                result.note(f"{name} frame {i + 1}: not a candump frame: {line[:80]!r}")
            table = table.filter(ok)
            if table.num_rows == 0:
                return result
            ts, frame = table.column("ts").combine_chunks(), table.column("frame").combine_chunks()
            seconds = pc.cast(pc.utf8_slice_codeunits(ts, 1, -1), pa.float64())
        t_us = np.round(seconds.to_numpy() * 1e6).astype(np.int64)
        ids, is_ext, is_fd, payload, _remote = _parse_frames(frame)
        is_err = (ids & _ERR_FLAG) != 0
        ids = np.where(is_err, ids & 0x1FFFFFFF, ids)
        result.frames = pa.table(
            [
                pa.array(t_us),
                table.column("bus").combine_chunks(),
                pa.array(ids),
                pa.array(is_ext),
                pa.array(is_fd),
                pa.array(is_err),
                pa.array(pc.binary_length(payload).to_numpy(zero_copy_only=False).astype(np.int16)),
                payload,
            ],
            schema=FRAME_SCHEMA,
        )
        return result
