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


_LE_KEEP = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)


def _words(data: pa.BinaryArray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first 8 bytes of the payloads at ``rows`` as big- and little-endian uint64s.

    A strided view reads the 8-byte word at every byte offset of the value
    buffer, so the words of all frames are one gather at their start offsets;
    bytes past a payload's end are zeroed, so the big-endian word is the
    little-endian one byte-swapped.
    """
    offsets = np.frombuffer(data.buffers()[1], dtype=np.int32)[data.offset : data.offset + len(data) + 1]
    values = np.frombuffer(data.buffers()[2], dtype=np.uint8) if data.buffers()[2] else np.zeros(0, np.uint8)
    padded = np.concatenate([values, np.zeros(8, np.uint8)])
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    view = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))
    le = view[starts] & _LE_KEEP[np.minimum(lengths, 8)]
    return le.byteswap(), le, lengths


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
    """One message's signals as arrays, so all of them decode in a few numpy ops.

    A signal is ``length`` bits of the message's 64-bit word: shifting it left to
    the word's top and back right by ``64 - length`` extracts it, arithmetically
    (on the int64 view) for signed signals, which also extends their sign.
    """

    names: tuple[str, ...]
    order: str  # "big", "little" or "mixed"
    big_endian: np.ndarray  # (S, 1) bool, used when the order is mixed
    left: np.ndarray  # (S, 1) uint64
    right: np.ndarray  # (S, 1) uint64
    signed: np.ndarray  # indices of the signed integer signals
    scale: np.ndarray  # (S, 1) float64
    offset: np.ndarray  # (S, 1) float64
    special: tuple[int, ...]  # float signals, 64-bit signals: decoded one by one
    mux: tuple[tuple[int, int, tuple[int, ...]], ...]  # (signal, multiplexer signal, ids)


def _plan(msg: Message) -> _Plan:
    sigs = list(msg.signals)
    col = lambda xs, dt: np.array(xs, dtype=dt).reshape(-1, 1)  # noqa: E731
    big, left, right, signed, special = [], [], [], [], []
    for i, s in enumerate(sigs):
        be = s.byte_order == "big_endian"
        pos = (s.start // 8) * 8 + (7 - s.start % 8)
        shift = 64 - pos - s.length if be else s.start  # of the signal's lowest bit
        big.append(be)
        if s.is_float or s.length >= 64 or shift < 0 or shift + s.length > 64:
            special.append(i)
            left.append(0)
            right.append(0)
            continue
        left.append(64 - shift - s.length)
        right.append(64 - s.length)
        if s.is_signed:
            signed.append(i)
    index = {s.name: i for i, s in enumerate(sigs)}
    mux = tuple(
        (i, index[s.multiplexer_signal], tuple(s.multiplexer_ids))
        for i, s in enumerate(sigs)
        if s.multiplexer_ids is not None and s.multiplexer_signal is not None
    )
    return _Plan(
        names=tuple(f"{msg.name}.{s.name}" for s in sigs),
        order="big" if all(big) else "little" if not any(big) else "mixed",
        big_endian=col(big, bool),
        left=col(left, np.uint64),
        right=col(right, np.uint64),
        signed=np.array(signed, dtype=np.intp),
        scale=col([float(s.conversion.scale) for s in sigs], np.float64),
        offset=col([float(s.conversion.offset) for s in sigs], np.float64),
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
        # Bytes each message needs (unknown ids: none); FD messages go through cantools.
        self._need = np.array([min(m.length, 8) for m in self._messages] + [0], dtype=np.int32)

    def _codes(self, frames: pa.Table) -> np.ndarray:
        """Dense message codes per frame (unknown ids and error frames: ``len(keys)``).

        A table for 11-bit ids, a binary search for the rest.
        """
        unknown = len(self._keys)
        ids = frames.column("arbitration_id").to_numpy()
        ext = frames.column("is_extended").to_numpy(zero_copy_only=False)
        err = frames.column("is_error").to_numpy(zero_copy_only=False)
        if not ext.any() and ids.min() >= 0 and ids.max() < 2048:
            codes = self._std_lut[ids]
        else:
            key = np.where(ext, ids | (1 << 40), ids)
            pos = np.minimum(np.searchsorted(self._keys, key), unknown - 1)
            codes = np.where(self._keys[pos] == key, pos, unknown).astype(np.uint16)
        return np.where(err, np.uint16(unknown), codes) if err.any() else codes

    def decode(self, frames: pa.Table) -> tuple[dict[str, DecodedSignal], DecodeStats]:
        """``{"MESSAGE.SIGNAL": DecodedSignal}`` for every signal of every known id.

        Frames are grouped by message with one O(n) radix sort of their codes;
        each message's payload words, times and lengths are then contiguous
        slices, decoded in a few numpy ops per message.
        """
        stats = DecodeStats(frames=frames.num_rows)
        out: dict[str, DecodedSignal] = {}
        if frames.num_rows == 0 or not len(self._keys):
            stats.unknown_ids = frames.num_rows
            return out, stats
        unknown = len(self._keys)
        codes = self._codes(frames)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(unknown + 1))
        known = order[: bounds[-1]]
        t = frames.column("t_us").to_numpy()[known]
        data_col = frames.column("data").combine_chunks()
        be, le, lengths = _words(data_col, known)
        short = lengths < self._need[codes[known]]
        any_short = bool(short.any())
        for code in np.flatnonzero(np.diff(bounds)).tolist():
            lo, hi = int(bounds[code]), int(bounds[code + 1])
            msg = self._messages[code]
            if msg.length > 8:
                self._decode_slow(msg, known[lo:hi], frames.column("t_us").to_numpy(), data_col, out, stats)
                continue
            keep: slice | np.ndarray = slice(lo, hi)
            if any_short and short[lo:hi].any():
                n_short = int(short[lo:hi].sum())
                stats.short_frames += n_short
                if len(stats.problems) < 20:
                    stats.problems.append(
                        f"{msg.name}: {n_short} frames shorter than {msg.length} bytes not decoded"
                    )
                keep = lo + np.flatnonzero(~short[lo:hi])
                if len(keep) == 0:
                    continue
            m_be, m_le, m_t = be[keep], le[keep], t[keep]
            stats.decoded += len(m_t)
            self._decode_plan(msg, self._plans[code], m_be, m_le, m_t, out)
        stats.unknown_ids = (
            frames.num_rows
            - int(bounds[-1])
            - int(frames.column("is_error").to_numpy(zero_copy_only=False).sum())
        )
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
        if plan.order == "big":
            word = be[None, :]
        elif plan.order == "little":
            word = le[None, :]
        else:
            word = np.where(plan.big_endian, be[None, :], le[None, :])
        top = word << plan.left  # each signal's highest bit at bit 63
        raw = (top >> plan.right).view(np.int64)
        if len(plan.signed):
            raw[plan.signed] = top[plan.signed].view(np.int64) >> plan.right[plan.signed].view(np.int64)
        vals = raw.astype(np.float64)
        vals *= plan.scale
        vals += plan.offset
        sigs = msg.signals
        for i in plan.special:
            vals[i] = _physical(sigs[i], _raw(sigs[i], be, le))
        for i, m, mux_ids in plan.mux:
            vals[i] = np.where(np.isin(raw[m], mux_ids), vals[i], np.nan)
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
                    stats.problems.append(f"{msg.name}: undecodable ({type(exc).__name__})")
                continue
            ts.append(int(t_all[r]))
            for s in msg.signals:
                v = decoded.get(s.name)  # type: ignore[union-attr]
                cols[s.name].append(float(v) if v is not None else np.nan)  # type: ignore[arg-type]
        stats.decoded += len(ts)
        for s in msg.signals:
            out[f"{msg.name}.{s.name}"] = DecodedSignal(np.array(ts, np.int64), np.array(cols[s.name]))
