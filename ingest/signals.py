"""Canonical signals on a fixed UTC grid from decoded DBC signals.

Each source signal is put on the grid first (continuous: linear interpolation
between its decoded samples, NaN outside them; discrete: the last value held),
then combined (mean/sum/first/any) and scaled, so sources from different
messages and rates line up.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ingest.can.dbc import DecodedSignal
from ingest.platform import Platform, SignalMap
from storage.schema import UTC_TS
from storage.tables.signals import CANONICAL

__all__ = ["grid", "resample", "to_grid"]

_GAP_S = 1.0
"""Longer gaps between samples are not interpolated across."""


def grid(t_min_us: int, t_max_us: int, rate_hz: float) -> np.ndarray:
    step = round(1_000_000 / rate_hz)
    start = -(-t_min_us // step) * step
    return np.arange(start, t_max_us + 1, step, dtype=np.int64)


def _on_grid(sig: DecodedSignal, g: np.ndarray, kind: str) -> np.ndarray:
    t, v = sig.t_us, sig.values
    keep = ~np.isnan(v)
    t, v = t[keep], v[keep]
    if len(t) == 0:
        return np.full(len(g), np.nan)
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    if kind == "discrete":
        i = np.searchsorted(t, g, side="right") - 1
        out = np.where(i >= 0, v[np.clip(i, 0, None)], np.nan)
        return out
    out = np.interp(g, t, v, left=np.nan, right=np.nan)
    j = np.searchsorted(t, g, side="right")
    gap = np.zeros(len(g), bool)
    inside = (j > 0) & (j < len(t))
    gap[inside] = (t[j[inside]] - t[j[inside] - 1]) > _GAP_S * 1e6
    out[gap] = np.nan
    return out


def to_grid(m: SignalMap, decoded: dict[str, DecodedSignal], g: np.ndarray) -> np.ndarray | None:
    parts = [_on_grid(decoded[s], g, m.kind) for s in m.sources if s in decoded]
    if not parts:
        return None
    stack = np.vstack(parts)
    if m.op == "mean":
        v = stack.mean(axis=0)
    elif m.op == "sum":
        v = stack.sum(axis=0)
    elif m.op == "any":
        v = np.where(
            np.isnan(stack).all(axis=0), np.nan, (np.nan_to_num(stack) != 0).any(axis=0).astype(float)
        )
    else:
        v = stack[0]
    if m.value_map:
        mapped = np.full(len(v), np.nan)
        for raw, canon in m.value_map:
            mapped[v == raw] = canon
        v = mapped
    if m.scale != 1.0:
        v = v * m.scale
    if m.divide != 1.0:
        v = v / m.divide
    if m.offset != 0.0:
        v = v + m.offset
    return v


def resample(
    platform: Platform,
    decoded: dict[str, DecodedSignal],
    rate_hz: float,
    t_range: tuple[int, int] | None = None,
) -> pa.Table:
    """The canonical signal columns (``t`` plus :data:`CANONICAL`) on the grid."""
    if t_range is None:
        spans = [(int(d.t_us.min()), int(d.t_us.max())) for d in decoded.values() if len(d.t_us)]
        if not spans:
            return pa.table({"t": pa.array([], UTC_TS)})
        t_range = (min(a for a, _ in spans), max(b for _, b in spans))
    g = grid(t_range[0], t_range[1], rate_hz)
    cols: dict[str, pa.Array] = {"t": pa.array(g, pa.int64()).cast(UTC_TS)}
    db = platform.database if any(m.choices for m in platform.signals.values()) else None
    for name in CANONICAL:
        m = platform.signals.get(name)
        v = to_grid(m, decoded, g) if m is not None else None
        if v is None:
            continue
        mask = np.isnan(v)
        if name == "gear" and m is not None and m.choices and db is not None:
            msg_name, sig_name = m.sources[0].split(".", 1)
            choices: dict[int, object] = dict(
                db.get_message_by_name(msg_name).get_signal_by_name(sig_name).choices or {}
            )
            labels = [None if np.isnan(x) else str(choices.get(int(x), int(x))) for x in v]
            cols[name] = pa.array(labels, pa.string())
        elif name in ("brake_pressed", "driver_override"):
            cols[name] = pa.array(v != 0, pa.bool_(), mask=mask)
        elif name == "turn_signal":
            cols[name] = pa.array(np.nan_to_num(v).astype(np.int8), pa.int8(), mask=mask)
        else:
            cols[name] = pa.array(v, pa.float64(), mask=mask)
    return pa.table(cols)
