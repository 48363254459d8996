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


def _bytes_matrix(data: pa.BinaryArray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``data`` as an ``(n, width)`` uint8 matrix, zero-padded; and the lengths."""
    data = data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data
    offsets = np.frombuffer(data.buffers()[1], dtype=np.int32)[data.offset : data.offset + len(data) + 1]
    values = np.frombuffer(data.buffers()[2], dtype=np.uint8) if data.buffers()[2] else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    if len(data) and (lengths == width).all():
        return values[offsets[0] : offsets[-1]].reshape(len(data), width), lengths
    out = np.zeros((len(data), width), dtype=np.uint8)
    cols = np.arange(width)
    take = cols[None, :] < np.minimum(lengths, width)[:, None]
    idx = offsets[:-1, None] + cols[None, :]
    out[take] = values[idx[take]]
    return out, lengths


def _raw(signal: Signal, be: np.ndarray, le: np.ndarray) -> np.ndarray:
    mask = np.uint64((1 << signal.length) - 1) if signal.length < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    if signal.byte_order == "big_endian":
        pos = (signal.start // 8) * 8 + (7 - signal.start % 8)
        shift = np.uint64(64 - pos - signal.length)
        raw = (be >> shift) & mask
    else:
        raw = (le >> np.uint64(signal.start)) & mask
    return raw


def _physical(signal: Signal, raw: np.ndarray) -> np.ndarray:
    if signal.is_float:
        vals = (
            raw.astype(np.uint32).view(np.float32) if signal.length == 32 else raw.view(np.float64)
        ).astype(np.float64)
    elif signal.is_signed:
        n = signal.length
        r = raw.astype(np.int64)
        if n < 64:
            r = np.where(r >= (1 << (n - 1)), r - (1 << n), r)
        vals = r.astype(np.float64)
    else:
        vals = raw.astype(np.float64)
    scale, offset = signal.conversion.scale, signal.conversion.offset
    if scale == 1 and offset == 0:
        return vals
    return vals * scale + offset


class VectorDecoder:
    """Decodes whole frame tables with a cantools database, numpy-fast."""

    def __init__(self, db: cantools.database.Database):
        self.db = db
        self._by_id: dict[tuple[int, bool], Message] = {
            (m.frame_id, bool(m.is_extended_frame)): m for m in db.messages
        }

    def decode(self, frames: pa.Table) -> tuple[dict[str, DecodedSignal], DecodeStats]:
        """``{"MESSAGE.SIGNAL": DecodedSignal}`` for every signal of every known id."""
        stats = DecodeStats(frames=frames.num_rows)
        out: dict[str, DecodedSignal] = {}
        if frames.num_rows == 0:
            return out, stats
        ids = frames.column("arbitration_id").to_numpy()
        ext = frames.column("is_extended").to_numpy(zero_copy_only=False)
        err = frames.column("is_error").to_numpy(zero_copy_only=False)
        key = np.where(ext, ids | (1 << 40), ids)
        key = np.where(err, -1, key)
        order = np.argsort(key, kind="stable")
        sorted_keys = key[order]
        starts = np.flatnonzero(np.diff(sorted_keys, prepend=sorted_keys[0] - 1))
        uniq = sorted_keys[starts]
        bounds = [*starts.tolist(), len(order)]
        t_all = frames.column("t_us").to_numpy()
        data_col = frames.column("data").combine_chunks()
        mat_all, len_all = _bytes_matrix(data_col, 8)
        be_all = mat_all.view(">u8").ravel().astype(np.uint64)
        le_all = mat_all.view("<u8").ravel()
        known = 0
        for k, a, b in zip(uniq.tolist(), bounds[:-1], bounds[1:], strict=True):
            if k < 0:
                continue
            msg = self._by_id.get((k & ((1 << 40) - 1), bool(k >> 40)))
            if msg is None:
                continue
            rows = order[a:b]
            known += len(rows)
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
            be, le = be_all[rows], le_all[rows]
            t = t_all[rows]
            raws = {s.name: _raw(s, be, le) for s in msg.signals}
            stats.decoded += len(rows)
            for s in msg.signals:
                vals = _physical(s, raws[s.name])
                if s.multiplexer_ids is not None and s.multiplexer_signal is not None:
                    sel = np.isin(raws[s.multiplexer_signal].astype(np.int64), s.multiplexer_ids)
                    vals = np.where(sel, vals, np.nan)
                out[f"{msg.name}.{s.name}"] = DecodedSignal(t, vals)
        stats.unknown_ids = int((~err).sum()) - known
        return out, stats

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
