"""``policy_errors``: how far a policy version's predicted actions were from the driver's.

One row per (policy version, clip), written by ``fleetmine shadow`` in one commit per run.
At each step through the clip (every ``step_s``) the policy predicts its actions over the
horizon; each is compared with the logged signal at the same instant, in the signal's own
unit. Per action (``accel`` = ``accel_mps2``, ``steer`` = ``steering_angle_deg``; null when
the policy does not output it):

- ``*_mean_abs``: mean absolute error over every compared (step, horizon point);
- ``*_max_abs``: the largest of them;
- ``*_fde``: the mean over steps of the error at the horizon's last point;
- ``step_*_err``: per step, the mean absolute error over its horizon (what a plot shows).

``disagreement`` ranks clips: the largest over steps of the sum over actions of the step
error divided by the policy's ``error_scale`` of that action; ``worst_step_s`` is that
step's time in the clip and ``worst_*_err`` its errors. ``pred_*`` is what the policy would
have done, on ``pred_t_s`` (s from the clip's start): each step's first ``step_s`` of
prediction, one after another; ``worst_pred_*`` is the whole horizon predicted at the worst
step, from ``worst_step_s`` on. Brake onsets (s from the clip's start): the driver's is the
first sample in the clip where ``accel_mps2`` falls to ``brake_mps2`` or below from above
(a clip that begins mid-brake has none until the next brake); the policy's, the first
instant within one horizon of the driver's onset (either side, past the clip's end too)
that a step predicted braking at, or with no driver onset the first predicted brake in
the clip (one the driver never made); the gap is policy minus driver (late > 0).
A clip with nothing to compare (no signals, too short) has ``steps`` 0 and says why in
``note``: it was visited, so the next run does not visit it again.
"""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

__all__ = ["ACTIONS", "SPEC"]

ACTIONS = {"accel_mps2": "accel", "steering_angle_deg": "steer"}
"""The actions a policy may output (``signals`` columns) and their short names here."""

_F64 = pa.float64()
_LIST = pa.list_(pa.float64())

SPEC = TableSpec(
    name="policy_errors",
    keys=("policy", "policy_version", "clip_id"),
    schema=pa.schema(
        [
            pa.field("policy", pa.string(), nullable=False),
            pa.field("policy_version", pa.int32(), nullable=False),
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("drive_id", pa.string()),
            pa.field("date", pa.date32()),
            pa.field("steps", pa.int32()),
            pa.field("disagreement", _F64),
            *(pa.field(f"{a}_{s}", _F64) for a in ACTIONS.values() for s in ("mean_abs", "max_abs", "fde")),
            pa.field("accel_steps_over", pa.int32()),  # steps whose accel error exceeds 0.5 m/s^2
            pa.field("worst_step_s", _F64),
            pa.field("worst_accel_err", _F64),
            pa.field("worst_steer_err", _F64),
            pa.field("brake_onset_driver_s", _F64),
            pa.field("brake_onset_policy_s", _F64),
            pa.field("brake_onset_gap_s", _F64),
            pa.field("step_t_s", _LIST),
            pa.field("step_accel_err", _LIST),
            pa.field("step_steer_err", _LIST),
            pa.field("pred_t_s", _LIST),
            pa.field("pred_accel", _LIST),
            pa.field("pred_steer", _LIST),
            pa.field("worst_pred_t_s", _LIST),
            pa.field("worst_pred_accel", _LIST),
            pa.field("worst_pred_steer", _LIST),
            pa.field("note", pa.string()),
            pa.field("run_id", pa.string()),
            pa.field("computed_at", UTC_TS),
        ]
    ),
    description="policy vs driver per clip: action errors, worst step, brake-onset gap, per-step errors",
    no_dictionary=("step_t_s", "step_accel_err", "step_steer_err", "pred_t_s", "pred_accel", "pred_steer"),
)
