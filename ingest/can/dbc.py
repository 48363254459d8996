"""DBC decoding, vectorised with numpy per arbitration id.

For each message of the database, the frames with its id are gathered into one
``(n, 8)`` byte matrix, read as a big- and a little-endian 64-bit word, and every
signal is a shift and a mask of that word (then sign, IEEE float view, scale and
offset, exactly as cantools computes them, so the values are bit-identical).
Multiplexed signals are masked to the frames whose multiplexer selects them.
Frames shorter than the message are not decoded (cantools refuses them too) and
are counted. Messages longer than 8 bytes (CAN FD) go through cantools itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cantools
import numpy as np
import pyarrow as pa
from cantools.database.can import Message, Signal

__all__ = ["DecodeStats", "DecodedSignal", "VectorDecoder"]


@dataclass
class DecodedSignal:
    t_us: np.ndarray
    values: np.ndarray  # float64, NaN where a multiplexed signal is absent


@dataclass
class DecodeStats:
    frames: int = 0
    decoded: int = 0
    unknown_ids: int = 0
    short_frames: int = 0
    problems: list[str] = field(default_factory=list)


_BE_KEEP = np.array([0] + [((1 << (8 * k)) - 1) << (8 * (8 - k)) for k in range(1, 9)], dtype=np.uint64)
_LE_KEEP = np.array([0] + [(1 << (8 * k)) - 1 for k in range(1, 9)], dtype=np.uint64)


def _words(data: pa.BinaryArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each payload's first 8 bytes as a big- and a little-endian uint64 (zero-padded).

    A strided view reads the 8-byte word at every byte offset of the value buffer,
    so the words of all frames are one gather at the frames' start offsets.
    """
    offsets = np.frombuffer(data.buffers()[1], dtype=np.int32)[data.offset : data.offset + len(data) + 1]
    values = np.frombuffer(data.buffers()[2], dtype=np.uint8) if data.buffers()[2] else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    padded = np.concatenate([values, np.zeros(8, np.uint8)])
    keep = np.minimum(lengths, 8)
    starts = offsets[:-1]
    shape = (len(padded) - 7,)
    be_view = np.ndarray(shape, dtype=">u8", buffer=padded, strides=(1,))
    le_view = np.ndarray(shape, dtype="<u8", buffer=padded, strides=(1,))
    be = be_view[starts].astype(np.uint64) & _BE_KEEP[keep]
    le = le_view[starts] & _LE_KEEP[keep]
    return be, le, lengths


def _raw(signal: Signal, be: np.ndarray, le: np.ndarray) -> np.ndarray:
    mask = np.uint64((1 << signal.length) - 1) if signal.length < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    if signal.byte_order == "big_endian":
        pos = (signal.start // 8) * 8 + (7 - signal.start % 8)
        return (be >> np.uint64(64 - pos - signal.length)) & mask
    return (le >> np.uint64(signal.start)) & mask


def _physical(signal: Signal, raw: np.ndarray) -> np.ndarray:
    """One signal the array plan does not cover (IEEE floats, 64-bit integers)."""
    if signal.is_float:
        as_float = raw.astype(np.uint32).view(np.float32) if signal.length == 32 else raw.view(np.float64)
        vals = as_float.astype(np.float64)
    elif signal.is_signed:
        vals = raw.view(np.int64).astype(np.float64)
    else:
        vals = raw.astype(np.float64)
    return vals * float(signal.conversion.scale) + float(signal.conversion.offset)


@dataclass(frozen=True)
class _Plan:
    """One message's signals as arrays, so all of them decode in a few numpy ops."""

    names: tuple[str, ...]
    big_endian: np.ndarray  # (S, 1) bool
    shift: np.ndarray  # (S, 1) uint64
    mask: np.ndarray  # (S, 1) uint64
    sign_at: np.ndarray  # (S, 1) int64: raw >= this is negative (int64 max when unsigned)
    sign_sub: np.ndarray  # (S, 1) int64
    scale: np.ndarray  # (S, 1) float64
    offset: np.ndarray  # (S, 1) float64
    special: tuple[int, ...]  # float signals, 64-bit signals: decoded one by one
    mux: tuple[tuple[int, int, tuple[int, ...]], ...]  # (signal, multiplexer signal, ids)


def _plan(msg: Message) -> _Plan:
    sigs = list(msg.signals)
    col = lambda xs, dt: np.array(xs, dtype=dt).reshape(-1, 1)  # noqa: E731
    be, shift, mask, sign_at, sign_sub, scale, offset, special = [], [], [], [], [], [], [], []
    for i, s in enumerate(sigs):
        big = s.byte_order == "big_endian"
        pos = (s.start // 8) * 8 + (7 - s.start % 8)
        be.append(big)
        shift.append(64 - pos - s.length if big else s.start)
        mask.append((1 << min(s.length, 63)) - 1)
        signed = s.is_signed and not s.is_float
        sign_at.append(1 << (s.length - 1) if signed and s.length < 64 else np.iinfo(np.int64).max)
        sign_sub.append(1 << s.length if signed and s.length < 64 else 0)
        scale.append(float(s.conversion.scale))
        offset.append(float(s.conversion.offset))
        if s.is_float or s.length >= 64 or (64 - pos - s.length if big else s.start) < 0:
            special.append(i)
    index = {s.name: i for i, s in enumerate(sigs)}
    mux = tuple(
        (i, index[s.multiplexer_signal], tuple(s.multiplexer_ids))
        for i, s in enumerate(sigs)
        if s.multiplexer_ids is not None and s.multiplexer_signal is not None
    )
    return _Plan(
        names=tuple(f"{msg.name}.{s.name}" for s in sigs),
        big_endian=col(be, bool),
        shift=col([max(x, 0) for x in shift], np.uint64),
        mask=col(mask, np.uint64),
        sign_at=col(sign_at, np.int64),
        sign_sub=col(sign_sub, np.int64),
        scale=col(scale, np.float64),
        offset=col(offset, np.float64),
        special=tuple(special),
        mux=mux,
    )


class VectorDecoder:
    """Decodes whole frame tables with a cantools database, numpy-fast."""

    def __init__(self, db: cantools.database.Database):
        self.db = db
        by_key = {m.frame_id | (1 << 40 if m.is_extended_frame else 0): m for m in db.messages}
        self._keys = np.array(sorted(by_key), dtype=np.int64)
        self._messages = [by_key[int(k)] for k in self._keys]
        self._plans = [_plan(m) for m in self._messages]
        self._std_lut = np.full(2048, len(self._keys), dtype=np.uint16)
        for code, k in enumerate(self._keys.tolist()):
            if k < 2048:
                self._std_lut[k] = code

    def decode(self, frames: pa.Table) -> tuple[dict[str, DecodedSignal], DecodeStats]:
        """``{"MESSAGE.SIGNAL": DecodedSignal}`` for every signal of every known id."""
        stats = DecodeStats(frames=frames.num_rows)
        out: dict[str, DecodedSignal] = {}
        if frames.num_rows == 0 or not len(self._keys):
            stats.unknown_ids = frames.num_rows
            return out, stats
        ids = frames.column("arbitration_id").to_numpy()
        ext = frames.column("is_extended").to_numpy(zero_copy_only=False)
        err = frames.column("is_error").to_numpy(zero_copy_only=False)
        # Dense codes for known messages (unknown = len): a table for 11-bit ids,
        # a binary search for the rest; then an O(n) radix sort of the codes.
        unknown = len(self._keys)
        small = ~ext & (ids >= 0) & (ids < 2048)
        if small.all():
            codes = self._std_lut[ids]
        else:
            key = np.where(ext, ids | (1 << 40), ids)
            pos = np.minimum(np.searchsorted(self._keys, key), unknown - 1)
            codes = np.where(self._keys[pos] == key, pos, unknown).astype(np.uint16)
        codes = np.where(err, unknown, codes).astype(np.uint16)
        known_mask = codes != unknown
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        bounds = np.searchsorted(sorted_codes, np.arange(len(self._keys) + 1))
        t_all = frames.column("t_us").to_numpy()
        data_col = frames.column("data").combine_chunks()
        be_all, le_all, len_all = _words(data_col)
        for code in np.flatnonzero(np.diff(bounds)).tolist():
            msg = self._messages[code]
            rows = order[bounds[code] : bounds[code + 1]]
            if msg.length > 8:
                self._decode_slow(msg, rows, t_all, data_col, out, stats)
                continue
            full = len_all[rows] >= msg.length
            if not full.all():
                stats.short_frames += int((~full).sum())
                if len(stats.problems) < 20:
                    stats.problems.append(
                        f"{msg.name}: {(~full).sum()} frames shorter than {msg.length} bytes not decoded"
                    )
                rows = rows[full]
            if len(rows) == 0:
                continue
            stats.decoded += len(rows)
            self._decode_plan(msg, self._plans[code], be_all[rows], le_all[rows], t_all[rows], out)
        stats.unknown_ids = int((~known_mask & ~err).sum())
        return out, stats

    @staticmethod
    def _decode_plan(
        msg: Message,
        plan: _Plan,
        be: np.ndarray,
        le: np.ndarray,
        t: np.ndarray,
        out: dict[str, DecodedSignal],
    ) -> None:
        word = np.where(plan.big_endian, be[None, :], le[None, :])
        raw = ((word >> plan.shift) & plan.mask).astype(np.int64)
        raw = np.where(raw >= plan.sign_at, raw - plan.sign_sub, raw)
        vals = raw.astype(np.float64) * plan.scale + plan.offset
        sigs = msg.signals
        for i in plan.special:
            vals[i] = _physical(sigs[i], _raw(sigs[i], be, le))
        for i, m, mux_ids in plan.mux:
            sel = np.isin(raw[m], mux_ids)
            vals[i] = np.where(sel, vals[i], np.nan)
        for i, name in enumerate(plan.names):
            out[name] = DecodedSignal(t, vals[i])

    def _decode_slow(
        self,
        msg: Message,
        rows: np.ndarray,
        t_all: np.ndarray,
        data_col: pa.BinaryArray,
        out: dict[str, DecodedSignal],
        stats: DecodeStats,
    ) -> None:
        cols: dict[str, list[float]] = {s.name: [] for s in msg.signals}
        ts: list[int] = []
        for r in rows.tolist():
            try:
                decoded = msg.decode(data_col[r].as_py(), decode_choices=False)
            except (cantools.database.DecodeError, ValueError) as exc:
                stats.short_frames += 1
                if len(stats.problems) < 20:
                    stats.problems.append(f"{msg.name}: {exc}")
                continue
            ts.append(int(t_all[r]))
            for s in msg.signals:
                v = decoded.get(s.name)  # type: ignore[union-attr]
                cols[s.name].append(float(v) if v is not None else np.nan)  # type: ignore[arg-type]
        stats.decoded += len(ts)
        for s in msg.signals:
            out[f"{msg.name}.{s.name}"] = DecodedSignal(np.array(ts, np.int64), np.array(cols[s.name]))
