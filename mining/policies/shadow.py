"""A policy run beside the driver: its predicted actions against the logged ones, per clip.

Pure numpy over one drive's signals (:class:`DriveSignals`), so a test can recompute every
figure from the ``signals`` rows. The unit of work is the drive: a step's state history
and horizon reach past its clip's edges into the drive. ``accel_mps2`` is the driver's
acceleration as triggers see it (:func:`storage.reads.derived_accel`: measured, else the
speed's change since the sample before), in the state a policy reads and in what its
prediction is compared with.

What :func:`score_clip` writes is documented on the table (``storage/tables/policy_errors.py``).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mining.policies.contract import PolicyParams
from storage.lake import Lake
from storage.reads import derived_accel, read_drive_signals
from storage.tables.policy_errors import ACTIONS

__all__ = ["DriveSignals", "PolicyError", "Predictor", "drive_signals", "score_clip"]

Predictor = Callable[[dict[str, np.ndarray]], np.ndarray]
"""Feeds (input name -> tensor) -> ``[N, K, A]`` predictions."""


class PolicyError(ValueError):
    """The network broke its contract at run time (a shape, a NaN): its message names only
    shapes and counts, never data, so it may be recorded as the drive's reason."""


ACCEL_OVER = 0.5
"""m/s^2: a step whose mean accel error exceeds this counts in ``accel_steps_over``."""


@dataclass
class DriveSignals:
    """A drive's signals on its grid: ``t_us`` ascending (us since the epoch), each column
    float64 with NaN where missing."""

    t_us: np.ndarray
    cols: dict[str, np.ndarray]
    rate_hz: float

    @classmethod
    def from_columns(cls, t_us: np.ndarray, cols: dict[str, np.ndarray], rate_hz: float) -> DriveSignals:
        cols = dict(cols)
        accel = derived_accel(cols.get("accel_mps2"), cols.get("speed_mps"), rate_hz)
        if accel is not None:
            cols["accel_mps2"] = accel
        return cls(np.asarray(t_us, np.int64), cols, rate_hz)

    @property
    def dt_us(self) -> int:
        return round(1e6 / self.rate_hz)

    def index(self, times_us: np.ndarray) -> np.ndarray:
        """The sample index of each time, -1 where the grid has no sample at that time."""
        i = np.searchsorted(self.t_us, times_us)
        ok = i < len(self.t_us)
        ok[ok] = self.t_us[i[ok]] == times_us[ok]
        return np.where(ok, i, -1)

    def column(self, name: str) -> np.ndarray:
        c = self.cols.get(name)
        return c if c is not None else np.full(len(self.t_us), np.nan)

    def values(self, name: str, idx: np.ndarray) -> np.ndarray:
        """``name`` at sample indices ``idx`` (NaN at -1)."""
        c = self.column(name)
        out = np.full(idx.shape, np.nan)
        ok = idx >= 0
        out[ok] = c[idx[ok]]
        return out


def drive_signals(lake: Lake, drive_id: str, date: Any, rate_hz: float) -> DriveSignals:
    """A drive's signals, read from its one date partition."""
    t_us, cols = read_drive_signals(lake, drive_id, date)
    return DriveSignals.from_columns(t_us, cols, rate_hz)


def step_times(sig: DriveSignals, start_us: int, end_us: int, p: PolicyParams) -> np.ndarray:
    """The steps through ``[start, end)``: from the first sample at or after the start, every
    ``step_s``; a step whose own sample is missing is skipped (its state would be a guess),
    and so is one whose state history would begin before the drive's first sample."""
    first = np.searchsorted(sig.t_us, start_us)
    if first >= len(sig.t_us) or sig.t_us[first] >= end_us:
        return np.zeros(0, np.int64)
    every = p.step_samples(sig.rate_hz) * sig.dt_us
    times = np.arange(int(sig.t_us[first]), end_us, every, dtype=np.int64)
    times = times[sig.index(times) >= 0]
    if p.inputs.state is not None:  # a history reaching before the drive began would be made up
        times = times[times - (p.history(sig.rate_hz) - 1) * sig.dt_us >= sig.t_us[0]]
    return times


def state_tensor(sig: DriveSignals, steps_us: np.ndarray, p: PolicyParams, dtype: Any) -> np.ndarray:
    """``[N, S, C]``: the last S samples up to each step; a sample the drive lacks (before its
    start, a gap) is the earliest one the window has; a missing value is 0."""
    return np.nan_to_num(state_values(sig, steps_us, p), nan=0.0).astype(dtype)


def state_values(sig: DriveSignals, steps_us: np.ndarray, p: PolicyParams) -> np.ndarray:
    """:func:`state_tensor` as float64 with NaN where a value is missing."""
    st = p.inputs.state
    assert st is not None
    s = p.history(sig.rate_hz)
    back = (np.arange(s) - (s - 1)) * sig.dt_us
    idx = sig.index(steps_us[:, None] + back[None, :])
    for j in range(idx.shape[0]):  # edge-pad from the earliest sample present (the step's own is)
        row = idx[j]
        have = np.flatnonzero(row >= 0)
        row[: have[0]] = row[have[0]]
        for k in range(have[0] + 1, s):
            if row[k] < 0:
                row[k] = row[k - 1]
    return np.stack([sig.values(c, idx) for c in st.columns], axis=-1)


def logged_tensor(sig: DriveSignals, steps_us: np.ndarray, p: PolicyParams) -> np.ndarray:
    """``[N, K, A]``: the driver's actions at each predicted instant (NaN where not logged)."""
    k = np.arange(1, p.points() + 1) * p.every(sig.rate_hz) * sig.dt_us
    idx = sig.index(steps_us[:, None] + k[None, :])
    return np.stack([sig.values(a, idx) for a in p.outputs], axis=-1)


def _mean(x: np.ndarray, axis: Any = None) -> Any:
    """``np.nanmean``, NaN (not a warning) where every value is missing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def _f(x: Any) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _list(x: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in x]


def driver_onset(sig: DriveSignals, start_us: int, end_us: int, threshold: float) -> int | None:
    """The first sample in ``[start, end)`` where accel falls to ``threshold`` or below from
    above it (or from a gap), as us since the epoch; None when the driver did not brake so."""
    a, b = np.searchsorted(sig.t_us, [start_us, end_us])
    if a >= b:
        return None
    acc = sig.column("accel_mps2")
    with np.errstate(invalid="ignore"):
        brk = acc <= threshold
    for i in range(a, b):
        if brk[i] and (i == 0 or not brk[i - 1] or sig.t_us[i - 1] != sig.t_us[i] - sig.dt_us):
            return int(sig.t_us[i])
    return None


def score_clip(
    sig: DriveSignals,
    start_us: int,
    end_us: int,
    p: PolicyParams,
    predict: Predictor,
    state_dtype: Any = np.float32,
    frames: Callable[[np.ndarray], np.ndarray] | None = None,
    first_frame_us: int | None = None,
) -> dict[str, Any]:
    """The ``policy_errors`` figures of one clip (without its ids); ``frames(steps_us)`` gives
    the frames tensor when the policy reads frames (none before ``first_frame_us``, the
    clip's first keyframe). A step is left out where a state column is missing over its
    whole history (fed as 0 it would look like a car standing still)."""
    steps = step_times(sig, start_us, end_us, p)
    row: dict[str, Any] = {"steps": 0}
    if not len(steps):
        row["note"] = "no signal samples in the clip"
        return row
    logged = logged_tensor(sig, steps, p)
    logged[~np.isfinite(logged)] = np.nan  # an infinite log value is no measurement
    keep = ~np.isnan(logged).all(axis=(1, 2))
    steps, logged = steps[keep], logged[keep]
    if not len(steps):
        row["note"] = f"no logged {', '.join(p.outputs)} within {p.horizon_s:g} s of any step"
        return row
    if p.inputs.frames is not None and first_frame_us is not None:
        keep = steps >= first_frame_us  # before the first keyframe it would see a later one
        steps, logged = steps[keep], logged[keep]
    state = None
    if p.inputs.state is not None:
        state = state_values(sig, steps, p)
        blind = np.isnan(state).all(axis=1)  # [N, C]: a column missing over the whole history
        if blind.any():
            gone = sorted({p.inputs.state.columns[c] for c in np.flatnonzero(blind.any(axis=0))})
            keep = ~blind.any(axis=1)
            steps, logged, state = steps[keep], logged[keep], state[keep]
            if not keep.any():
                row["note"] = f"no {', '.join(gone)} logged in the state windows of the clip's steps"
                return row
    if not len(steps):
        row["note"] = "no keyframe at or before any step of the clip"
        return row
    per = p.steps_per_run()
    parts = []
    for at in range(0, len(steps), per):  # slices: a frames tensor of every step at once is large
        feeds: dict[str, np.ndarray] = {}
        if state is not None and p.inputs.state is not None:
            chunk = np.nan_to_num(state[at : at + per], nan=0.0).astype(state_dtype)
            feeds[p.inputs.state.name] = chunk
        if p.inputs.frames is not None:
            assert frames is not None
            feeds[p.inputs.frames.name] = frames(steps[at : at + per])
        parts.append(np.asarray(predict(feeds), np.float64))
    pred = np.concatenate(parts) if len(parts) > 1 else parts[0]
    n, k, a = len(steps), p.points(), len(p.outputs)
    if pred.shape != (n, k, a):
        raise PolicyError(f"the policy answered shape {list(pred.shape)} for {n} steps; expected {[n, k, a]}")
    if not np.isfinite(pred).all():  # a broken network: never scored as if it were right
        bad = int((~np.isfinite(pred)).sum())
        raise PolicyError(f"the policy predicted {bad} non-finite values for {n} steps")
    err = np.abs(pred - logged)
    step_err = _mean(err, axis=1)  # [N, A]
    score = np.zeros(n)
    for j, action in enumerate(p.outputs):
        score += np.nan_to_num(step_err[:, j] / p.error_scale[action], nan=0.0)
    worst = int(np.argmax(score))
    t0 = steps - start_us
    out_dt = 1.0 / p.rate_hz
    row.update(
        steps=n,
        disagreement=float(score[worst]),
        worst_step_s=float(t0[worst] / 1e6),
        step_t_s=(t0 / 1e6).tolist(),
    )
    head = min(k, max(1, round(p.step_s * p.rate_hz)))  # each step's first step_s of prediction
    row["pred_t_s"] = [float(t / 1e6 + (i + 1) * out_dt) for t in t0 for i in range(head)]
    row["worst_pred_t_s"] = [float(t0[worst] / 1e6 + (i + 1) * out_dt) for i in range(k)]
    for j, action in enumerate(p.outputs):
        short = ACTIONS[action]
        e = err[:, :, j]
        has = not np.isnan(e).all()
        row[f"{short}_mean_abs"] = _f(_mean(e)) if has else None
        row[f"{short}_max_abs"] = _f(np.nanmax(e)) if has else None
        row[f"{short}_fde"] = _f(_mean(e[:, -1])) if not np.isnan(e[:, -1]).all() else None
        row[f"step_{short}_err"] = _list(step_err[:, j])
        row[f"worst_{short}_err"] = _f(step_err[worst, j])
        row[f"pred_{short}"] = _list(pred[:, :head, j].reshape(-1))
        row[f"worst_pred_{short}"] = _list(pred[worst, :, j])
    if "accel_mps2" in p.outputs:
        j = p.outputs.index("accel_mps2")
        with np.errstate(invalid="ignore"):
            row["accel_steps_over"] = int(np.sum(step_err[:, j] > ACCEL_OVER))
        onset = driver_onset(sig, start_us, end_us, p.brake_mps2)
        at = steps[:, None] + np.arange(1, k + 1)[None, :] * p.every(sig.rate_hz) * sig.dt_us
        brakes = pred[:, :, j] <= p.brake_mps2
        if onset is not None:
            # the first instant within one horizon of the driver's onset, either side, that a
            # step predicted braking at (past the clip's end too: a late brake is late, not missed)
            reach = round(p.horizon_s * 1e6)
            hit = brakes & (at >= onset - reach) & (at <= onset + reach)
            row["brake_onset_driver_s"] = (onset - start_us) / 1e6
        else:  # a brake the driver never made: when it would have come, in the clip
            hit = brakes & (at >= start_us) & (at < end_us)
        if hit.any():
            first = int(at[hit].min())
            row["brake_onset_policy_s"] = (first - start_us) / 1e6
            if onset is not None:
                row["brake_onset_gap_s"] = (first - onset) / 1e6
    return row


def keyframe_tensor(
    frames: list[tuple[int, bytes]], steps_us: np.ndarray, p: PolicyParams, max_pixels: int = 1 << 24
) -> np.ndarray:
    """``[N, count, 3, H, W]`` float32: per step the ``count`` latest keyframes at or before it
    (``(t_us, jpeg)`` sorted by time; the earliest repeated where fewer came before)."""
    from PIL import Image

    f = p.inputs.frames
    assert f is not None
    h, w = f.size
    mean = np.array(f.mean, np.float32)[:, None, None]
    std = np.array(f.std, np.float32)[:, None, None]
    cache: dict[int, np.ndarray] = {}

    def pixels(i: int) -> np.ndarray:
        if i not in cache:
            img = Image.open(io.BytesIO(frames[i][1]))
            if img.width * img.height > max_pixels:  # a decompression bomb is refused, not decoded
                raise ValueError(f"keyframe of {img.width}x{img.height} pixels is too large")
            rgb = img.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
            x = np.asarray(rgb, np.float32).transpose(2, 0, 1) / 255.0
            cache[i] = (x - mean) / std
        return cache[i]

    times = np.array([t for t, _ in frames], np.int64)
    out = np.zeros((len(steps_us), f.count, 3, h, w), np.float32)
    if not len(frames):
        return out
    for n, s in enumerate(steps_us):
        last = max(0, int(np.searchsorted(times, s, side="right")) - 1)
        for c in range(f.count):
            out[n, f.count - 1 - c] = pixels(max(0, last - c))
    return out
