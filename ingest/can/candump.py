"""candump -L logs (``(1533226487.000013) can0 2C1#0014DF14BBCA3A91``), parsed in bulk.

No Python code runs per frame. The log is read in chunks of about 512 KB of
lines. A chunk whose lines are all classic frames (the usual case) is parsed
straight from its bytes: the newlines (and, when lines differ in layout, every
byte <= '.') give every field's bounds, and each field is read and validated
as 64-bit words (:mod:`ingest.can._ascii`). A chunk with anything else (CAN
FD, remote frames, garbage) goes through the exact path: Arrow's CSV reader
splits the lines into three fields, RE2 checks each field's shape, and ids and
payloads are decoded with numpy over the string buffers. Lines that do not
look like frames are counted and reported, never fatal: the frames after a
garbled line are kept.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from ingest._reasons import reason
from ingest.can._ascii import Text, decimal, hex_bytes, hex_nibbles, in_range, pack_hex, same
from ingest.interfaces import FRAME_SCHEMA, CanReadResult

__all__ = ["CandumpReader"]

_TS = r"^\(\d{1,12}\.\d{1,9}\)$"
_FRAME = r"^[0-9A-Fa-f]{1,8}#(#[0-9A-Fa-f])?(([0-9A-Fa-f]{2}){0,64}|R\d?)$"
_ERR_FLAG = 0x20000000
_LUT = np.zeros(256, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _LUT[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _LUT[_c] = 10 + _i


def _buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset : arr.offset + len(arr) + 1]
    values = np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] else np.zeros(0, np.uint8)
    return offsets.astype(np.int64), values


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


_LINE = np.frombuffer(b"(.)  #\n", np.uint8)  # a frame line's bytes <= '.', in order


def _bus_column(data: np.ndarray, words: np.ndarray, first: np.ndarray, length: np.ndarray) -> pa.Array:
    n = len(first)
    width = int(length[0])
    if width <= 8 and (length == width).all():  # "can0", "can1", ...: slice the words
        values = np.ascontiguousarray(words.view(np.uint8).reshape(n, 8)[:, :width])
        offsets = np.arange(n + 1, dtype=np.int32) * width
    else:
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(length, out=offsets[1:])
        values = data[np.repeat(first - offsets[:-1], length) + np.arange(int(offsets[-1]))]
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(values)])


def _payload_column(words: np.ndarray, nbytes: np.ndarray) -> pa.Array:
    """Payloads of up to 8 bytes (zero-padded little-endian words) as a binary array.

    Built as Arrow binary views, whose 16-byte slots hold payloads this short
    inline (length, then the bytes), then cast: no per-row gather in numpy.
    """
    n = len(words)
    views = np.zeros((n, 4), np.uint32)
    views[:, 0] = nbytes
    views[:, 1:3] = words.view(np.uint32).reshape(n, 2)
    return pa.Array.from_buffers(pa.binary_view(), n, [None, pa.py_buffer(views)]).cast(pa.binary())


_Layout = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _fixed_layout(data: bytes, buf: np.ndarray) -> _Layout | None:
    """Field bounds from the newlines alone, when every line has the first line's layout.

    candump -L zero-pads its timestamps and a log usually has one bus-name
    width, so '(', '.', ')' and both spaces sit at the same offsets in every
    line and the id is 3 or 8 digits long. The bytes at those offsets are
    checked; a log laid out any other way gets None.
    """
    first = data[: data.find(b"\n")]
    dot, close = first.find(b"."), first.find(b")")
    space2 = first.find(b" ", close + 2)
    if not 0 < dot < close or not close + 2 < space2 <= close + 10 or first[close + 1 : close + 2] != b" ":
        return None  # (a bus name of 1-8 characters)
    ends = np.flatnonzero(buf == ord("\n"))
    starts = np.concatenate(([0], ends[:-1] + 1))
    last = len(buf) - 1
    if starts[-1] + space2 > last:
        return None
    for offset, char in ((0, b"("), (dot, b"."), (close, b")"), (close + 1, b" "), (space2, b" ")):
        if (buf[starts + offset] != ord(char)).any():
            return None
    s2 = starts + space2
    std = buf[np.minimum(s2 + 4, last)] == ord("#")
    if not (std | (buf[np.minimum(s2 + 9, last)] == ord("#"))).all():
        return None
    return starts, starts + dot, starts + close, starts + close + 1, s2, s2 + np.where(std, 4, 9), ends


def _scanned_layout(buf: np.ndarray) -> _Layout | None:
    """Field bounds of any plain-frame line, from every byte <= '.' of the log.

    In a frame line those are exactly "(", ".", ")", " ", " ", "#", "\n" in this
    order (digits, hex and bus names are all above '.').
    """
    marks = np.flatnonzero(buf <= ord("."))
    n = len(marks) // len(_LINE)
    if n == 0 or len(marks) % len(_LINE) or not (buf[marks].reshape(n, -1) == _LINE).all():
        return None
    at = marks.reshape(n, -1)
    starts, dots, closes, s1, s2, hashes, ends = (at[:, i] for i in range(len(_LINE)))
    if starts[0] != 0 or (starts[1:] != ends[:-1] + 1).any():
        return None
    return starts, dots, closes, s1, s2, hashes, ends


def _plain_frames(data: bytes) -> pa.Table | None:
    """The whole log in whole-array ops, when every line is a plain classic frame.

    ``(SECONDS.FRACTION) BUS ID#DATA`` with 1-12 + 1-6 digit time, a 1-8 digit
    hex id and 0-8 payload bytes, which is what candump -L writes for classic
    CAN. None as soon as any line is anything else; the exact path then reads
    the file and says which lines were wrong.
    """
    if not data.endswith(b"\n"):
        data += b"\n"
    text = Text(data)
    layout = _fixed_layout(data, text.bytes) or _scanned_layout(text.bytes)
    if layout is None:
        return None
    starts, dots, closes, s1, s2, hashes, ends = layout
    n = len(starts)
    int_len, frac_len, bus_len = dots - starts - 1, closes - dots - 1, s2 - s1 - 1
    id_len, text_len = hashes - s2 - 1, ends - hashes - 1
    shape_ok = (
        (int_len >= 1)
        & (int_len <= 12)
        & (frac_len >= 1)
        & (frac_len <= 6)
        & (closes + 1 == s1)
        & (bus_len >= 1)
        & (id_len >= 1)
        & (id_len <= 8)
        & (text_len >= 0)
        & (text_len <= 16)
        & (text_len % 2 == 0)
    )
    if not shape_ok.all():
        return None
    secs_lo, ok1 = decimal(text.ending_at(dots, same(np.minimum(int_len, 8))))
    secs_hi, ok2 = decimal(text.ending_at(np.maximum(dots - 8, 0), same(np.clip(int_len - 8, 0, 8))))
    frac, ok3 = decimal(text.starting_at(dots + 1, same(frac_len)))  # right-padded: 1e-8 s units
    id_nib, ok4 = hex_nibbles(text.ending_at(hashes, same(id_len)))
    lo_nib, ok5 = hex_nibbles(text.starting_at(hashes + 1, same(np.minimum(text_len, 8))))
    hi_nib, ok6 = hex_nibbles(text.starting_at(hashes + 9, same(np.clip(text_len - 8, 0, 8))))
    if not (ok1 and ok2 and ok3 and ok4 and ok5 and ok6):
        return None
    t_us = (secs_hi * np.uint64(100_000_000) + secs_lo).astype(np.int64) * 1_000_000 + (
        frac // np.uint64(100)
    ).astype(np.int64)
    bus_words = text.starting_at(s1 + 1, same(np.minimum(bus_len, 8)))
    if in_range(bus_words, 0, ord(".")).any():  # a space, '#' or '.' in a bus name: not a frame
        return None
    ids = pack_hex(id_nib).astype(np.int64)
    nbytes = text_len // 2
    is_err = (ids & _ERR_FLAG) != 0
    return pa.table(
        [
            pa.array(t_us),
            _bus_column(text.bytes, bus_words, s1 + 1, bus_len),
            pa.array(np.where(is_err, ids & 0x1FFFFFFF, ids)),
            pa.array(id_len > 3),
            pa.array(np.zeros(n, bool)),
            pa.array(is_err),
            pa.array(nbytes.astype(np.int16)),
            _payload_column(hex_bytes(lo_nib) | (hex_bytes(hi_nib) << np.uint64(32)), nbytes),
        ],
        schema=FRAME_SCHEMA,
    )


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` in pieces of about ``size`` bytes, each ending at a line end."""
    start = 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + size) + 1 if start + size < len(data) else len(data)
        if end <= start:  # one line longer than a chunk
            end = data.find(b"\n", start + size) + 1 or len(data)
        yield data[start:end]
        start = end


class CandumpReader:
    """Reads a log a chunk of lines at a time, so memory stays bounded on long logs."""

    suffixes: tuple[str, ...] = (".log", ".candump")
    chunk_bytes = 1 << 19  # ~12k frames: a chunk's temporaries stay small (in cache, off mmap)

    def read(self, data: bytes, name: str) -> CanReadResult:
        result = CanReadResult(FRAME_SCHEMA.empty_table())
        if not data.isascii():  # candump is ASCII; garbage bytes must not break the parser
            data = data.decode("utf-8", errors="replace").encode("ascii", errors="replace")
        if b"\r" in data:  # a log that passed through Windows tools
            data = data.replace(b"\r\n", b"\n")
        tables: list[pa.Table] = []
        for chunk in _chunks(data, self.chunk_bytes):
            plain = _plain_frames(chunk)
            if plain is None:  # something unusual in this chunk: the exact path says what
                plain = self._read_exact(chunk, name, result, first_row=sum(t.num_rows for t in tables))
            tables.append(plain)
        if tables:
            result.frames = pa.concat_tables(tables)
        return result

    def _read_exact(self, data: bytes, name: str, result: CanReadResult, first_row: int) -> pa.Table:
        """Frames of ``data`` by Arrow's CSV reader and exact regexes; bad lines noted in ``result``."""
        wrong_fields: list[str] = []

        def on_bad_row(row: pcsv.InvalidRow) -> str:
            wrong_fields.append(f"{row.actual_columns} fields where a frame has {row.expected_columns}")
            return "skip"

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
            result.note(f"{name}: not a candump log ({reason(exc)})")
            return FRAME_SCHEMA.empty_table()
        for text in wrong_fields:
            result.note(f"{name}: not a candump frame: {text}")
        ts, frame = table.column("ts").combine_chunks(), table.column("frame").combine_chunks()
        shaped = pc.and_(pc.match_substring_regex(ts, _TS), pc.match_substring_regex(frame, _FRAME))
        ok = pc.fill_null(shaped, False)
        for i in pc.indices_nonzero(pc.invert(ok)).to_pylist():
            result.note(
                f"{name} frame {first_row + i + 1}: not a candump frame (timestamp or ID#DATA malformed)"
            )
        table = table.filter(ok)
        if table.num_rows == 0:
            return FRAME_SCHEMA.empty_table()
        ts, frame = table.column("ts").combine_chunks(), table.column("frame").combine_chunks()
        seconds = pc.cast(pc.utf8_slice_codeunits(ts, 1, -1), pa.float64())
        t_us = np.round(seconds.to_numpy() * 1e6).astype(np.int64)
        ids, is_ext, is_fd, payload, _remote = _parse_frames(frame)
        is_err = (ids & _ERR_FLAG) != 0
        ids = np.where(is_err, ids & 0x1FFFFFFF, ids)
        return pa.table(
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
