"""A baseline policy fitted on the lake itself, so shadow mining works with no model of the user's.

Ridge regression from the last second of speed, acceleration and steering to the next
2 s of acceleration and steering, on the lake's own 20 Hz signals, written as a small
ONNX graph (flatten, one ``Gemm``, reshape) and registered like any policy. It
predicts how driving usually goes on from what the car was doing, so it disagrees most
where the driver did something the recent past did not announce: a brake for a cut-in, a
swerve, a stop for a person in the road. Why ridge and not a network: it has a closed-form
fit from sums over the samples (streamed per drive, memory bounded by the feature count
whatever the lake's size), the same result every run, and no training dependency.
A team replaces it with its own network's ONNX under the same contract.

Why 2 s ahead and not 3: a state-only policy cannot see a red light, so every ordinary stop
is a surprise to it; the further ahead it is scored, the more of an ordinary stop's braking
falls in the horizon and the more ordinary stops crowd the rare events out of the top of
the ranking (measured on seven synthetic fleets of 324 clips: top-k recall 0.75-0.875 at
3 s, 0.81-1.0 at 2 s).

Why not the clip's vector as an input: it pools the whole clip, the future included, so a
policy fed it would see the braking it is meant to predict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mining.policies.contract import PolicyParams
from mining.policies.registry import PolicySpec, register_policy
from mining.policies.shadow import DriveSignals, drive_signals, logged_tensor, state_tensor
from storage.errors import ConfigError
from storage.lake import Lake

__all__ = ["BASELINE_PARAMS", "Fit", "fit_baseline", "onnx_model", "train_baseline"]

BASELINE_PARAMS: dict[str, Any] = {
    "inputs": {"state": {"columns": ["speed_mps", "accel_mps2", "steering_angle_deg"], "seconds": 1.0}},
    "horizon_s": 2.0,
    "rate_hz": 10.0,
    "outputs": ["accel_mps2", "steering_angle_deg"],
    "step_s": 0.5,
}
MIN_STEPS = 20
"""Complete steps (a whole history and horizon logged) the fit needs at least: 10 s of driving."""
RIDGE = 1.0
"""The ridge penalty on standardised features: enough to keep a near-constant signal (a
car that never steered) from blowing a weight up, small against the sample counts."""


@dataclass
class Fit:
    weights: np.ndarray  # [F, K*A] on raw features
    bias: np.ndarray  # [K*A]
    residual: np.ndarray  # [A]: mean absolute training error per action (its error_scale)
    steps: int
    drives: int


class _Sums:
    """The sums ridge regression needs (X'X, X'Y, ...), added to drive by drive."""

    def __init__(self, f: int, o: int):
        self.n = 0
        self.sx, self.sy = np.zeros(f), np.zeros(o)
        self.xx, self.xy = np.zeros((f, f)), np.zeros((f, o))

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        self.n += len(x)
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.xx += x.T @ x
        self.xy += x.T @ y


def _drive_steps(sig: DriveSignals, p: PolicyParams) -> tuple[np.ndarray, np.ndarray]:
    """Features and targets at every step through the drive whose horizon is fully logged."""
    every = p.step_samples(sig.rate_hz) * sig.dt_us
    if not len(sig.t_us):
        return np.zeros((0, 1)), np.zeros((0, 1))
    steps = np.arange(int(sig.t_us[0]), int(sig.t_us[-1]) + 1, every, dtype=np.int64)
    steps = steps[sig.index(steps) >= 0]
    steps = steps[steps - (p.history(sig.rate_hz) - 1) * sig.dt_us >= sig.t_us[0]]  # whole histories
    y = logged_tensor(sig, steps, p)
    keep = ~np.isnan(y).any(axis=(1, 2))
    steps, y = steps[keep], y[keep]
    x = state_tensor(sig, steps, p, np.float64)
    return x.reshape(len(x), -1), y.reshape(len(y), -1)


def fit_baseline(drives: Callable[[], Iterable[DriveSignals]], p: PolicyParams, signal_hz: float) -> Fit:
    """Ridge on standardised features, folded back onto raw ones (so the graph is one Gemm).
    Two passes over ``drives()``, holding only sums: the fit, then its mean absolute error
    per action (the policy's ``error_scale``: what a typical miss of it is, so the
    disagreement adds accel and steering in units of the policy's own everyday error)."""
    assert p.inputs.state is not None
    f = p.history(signal_hz) * len(p.inputs.state.columns)
    k, na = p.points(), len(p.outputs)
    sums, used = _Sums(f, k * na), 0
    for sig in drives():
        x, y = _drive_steps(sig, p)
        if len(x):
            sums.add(x, y)
            used += 1
    if sums.n < MIN_STEPS:  # the ridge keeps fewer steps than features solvable; this few say nothing
        raise ConfigError(f"the lake has {sums.n} complete steps to fit a baseline on; it needs {MIN_STEPS}")
    n = sums.n
    mu, ymu = sums.sx / n, sums.sy / n
    cov = sums.xx / n - np.outer(mu, mu)
    sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
    sd = np.where(sd > 1e-9, sd, 1.0)
    cxy = sums.xy / n - np.outer(mu, ymu)
    w_std = np.linalg.solve(cov / np.outer(sd, sd) + (RIDGE / n) * np.eye(f), cxy / sd[:, None])
    w = w_std / sd[:, None]
    b = ymu - mu @ w
    err = np.zeros(na)
    for sig in drives():
        x, y = _drive_steps(sig, p)
        if len(x):
            err += np.abs((x @ w + b - y).reshape(len(x), k, na)).sum(axis=(0, 1))
    return Fit(w, b, err / (n * k), n, used)


def onnx_model(fit: Fit, p: PolicyParams, signal_hz: float) -> bytes:
    """``state [N, S, C] -> actions [N, K, A]``: flatten, one ``Gemm``, reshape (float32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    assert p.inputs.state is not None
    s, c = p.history(signal_hz), len(p.inputs.state.columns)
    k, a = p.points(), len(p.outputs)
    nodes = [
        helper.make_node("Flatten", ["state"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "b"], ["out"]),
        helper.make_node("Reshape", ["out", "shape"], [p.output]),
    ]
    graph = helper.make_graph(
        nodes,
        "fleetmine_baseline_policy",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, ["N", s, c])],
        [helper.make_tensor_value_info(p.output, TensorProto.FLOAT, ["N", k, a])],
        [
            numpy_helper.from_array(fit.weights.astype(np.float32), "W"),
            numpy_helper.from_array(fit.bias.astype(np.float32), "b"),
            numpy_helper.from_array(np.array([-1, k, a], np.int64), "shape"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fleetmine")
    model.ir_version = 8  # what every onnxruntime >= 1.15 reads
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _sample(drive_ids: list[str], at_most: int) -> list[str]:
    """Up to ``at_most`` drives, the same ones every run (by hash, not by name order)."""
    return sorted(drive_ids, key=lambda d: hashlib.sha256(d.encode()).hexdigest())[:at_most]


def train_baseline(
    lake: Lake, name: str, signal_hz: float = 20.0, max_drives: int = 500
) -> tuple[PolicySpec, Fit]:
    """Fit the baseline on up to ``max_drives`` of the lake's drives, write it as ONNX,
    register it as ``name``'s next version (its ``error_scale`` the fit's residuals)."""
    p = PolicyParams.model_validate(BASELINE_PARAMS)
    ok = [
        d
        for d in lake.read("drives", columns=["drive_id", "date", "status"]).to_pylist()
        if d["status"] != "failed"
    ]
    day = {d["drive_id"]: d["date"] for d in ok}
    chosen = _sample(sorted(day), max_drives)
    if not chosen:
        raise ConfigError("the lake has no ingested drives to fit a baseline policy on")
    fit = fit_baseline(lambda: (drive_signals(lake, d, day[d], signal_hz) for d in chosen), p, signal_hz)
    scale = {a: max(float(r), 1e-3) for a, r in zip(p.outputs, fit.residual, strict=True)}
    params = {**p.model_dump(mode="json"), "error_scale": scale}
    model = onnx_model(fit, p, signal_hz)
    source = f"baseline: ridge on {fit.steps} steps of {fit.drives} drives"
    return register_policy(lake, name, model, params, source, signal_hz), fit
