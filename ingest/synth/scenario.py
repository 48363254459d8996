"""Drive kinematics and scene objects at 100 Hz: ordinary driving plus planted rare events.

Everything a drive's video and CAN log show comes from one :class:`DriveState`,
so the speed in the CAN log is the speed the video was rendered with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["EVENT_TYPES", "HZ", "DriveState", "Event", "simulate"]

HZ = 100
_WHEELBASE_M = 2.7
_STEER_RATIO = 15.0
EVENT_TYPES = (
    "pedestrian_crossing",
    "cut_in",
    "red_light_creep",
    "waving_person_stop",
    "evasive_swerve",
    "driver_takeover",
)


@dataclass(frozen=True)
class Event:
    type: str
    start_s: float  # within the drive
    end_s: float


@dataclass
class DriveState:
    """Per-sample arrays (``HZ`` per second) of everything the renderer and CAN need."""

    t: np.ndarray
    speed: np.ndarray  # m/s
    accel: np.ndarray  # m/s^2
    road_curv: np.ndarray  # 1/m, curvature of the road ahead
    offset: np.ndarray  # m, ego lateral offset from its lane centre (left positive)
    steer_deg: np.ndarray
    steer_rate: np.ndarray
    yaw_rate: np.ndarray  # deg/s
    lat_accel: np.ndarray
    brake: np.ndarray  # bool
    gas: np.ndarray  # 0..1
    override: np.ndarray  # bool
    torque: np.ndarray  # Nm, driver steering torque
    turn: np.ndarray  # 0 none, 1 left, 2 right
    distance: np.ndarray  # m travelled
    # scene: per sample, each NaN when absent
    lead_z: np.ndarray  # m ahead, car in ego lane
    lead_x: np.ndarray  # m lateral of that car
    ped_z: np.ndarray
    ped_x: np.ndarray
    ped_wave: np.ndarray  # 1 when waving
    light_z: np.ndarray  # traffic light distance
    light_red: np.ndarray  # 1 red, 0 green
    obstacle_z: np.ndarray
    events: list[Event] = field(default_factory=list)
    origin: int = 0  # index of sample 0 in the drive this state was cut from (duplicates)


def _ss(x: float) -> float:
    """Smootherstep: 0 below 0, 1 above 1; its first two derivatives are continuous."""
    x = min(max(x, 0.0), 1.0)
    return x * x * x * (x * (6 * x - 15) + 10)


def _clip(x: float, lo: float, hi: float) -> float:
    """``np.clip`` of one float, without its per-call overhead (the loop below runs at
    20 Hz over a whole drive): the same value, NaN kept."""
    return min(max(x, lo), hi)


def _smooth(x: np.ndarray, sigma_s: float) -> np.ndarray:
    k = np.arange(-3 * sigma_s * HZ, 3 * sigma_s * HZ + 1) / HZ
    kernel = np.exp(-0.5 * (k / sigma_s) ** 2)
    padded = np.pad(x, len(k) // 2, mode="edge")
    return np.convolve(padded, kernel / kernel.sum(), mode="valid")


def simulate(rng: np.random.Generator, seconds: float, planted: dict[int, str]) -> DriveState:
    """A drive of ``seconds``; ``planted`` maps 10-s window index -> rare event type."""
    n = round(seconds * HZ)
    t = np.arange(n) / HZ
    dt = 1.0 / HZ
    nan = lambda: np.full(n, np.nan)  # noqa: E731
    s = DriveState(
        t=t,
        speed=np.zeros(n),
        accel=np.zeros(n),
        road_curv=np.zeros(n),
        offset=np.zeros(n),
        steer_deg=np.zeros(n),
        steer_rate=np.zeros(n),
        yaw_rate=np.zeros(n),
        lat_accel=np.zeros(n),
        brake=np.zeros(n, bool),
        gas=np.zeros(n),
        override=np.zeros(n, bool),
        torque=np.zeros(n),
        turn=np.zeros(n, np.int8),
        distance=np.zeros(n),
        lead_z=nan(),
        lead_x=nan(),
        ped_z=nan(),
        ped_x=nan(),
        ped_wave=np.zeros(n),
        light_z=nan(),
        light_red=np.zeros(n),
        obstacle_z=nan(),
    )
    # Gentle road curvature: a few slow sinusoids.
    curv = np.zeros(n)
    for _ in range(3):
        period = rng.uniform(40, 120)
        curv += rng.uniform(0.0005, 0.0018) * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    s.road_curv = curv
    # A cruise target that wanders; a lead car some of the time.
    cruise = np.clip(16 + 5 * np.sin(2 * np.pi * t / rng.uniform(50, 90) + rng.uniform(0, 6)), 10, 24)
    for win, typ in planted.items():  # arrive slowly where the event is a stop
        if typ in ("red_light_creep", "waving_person_stop") and win > 0:
            cruise[(win - 1) * 10 * HZ : win * 10 * HZ + 3 * HZ] = 4.0 if typ == "red_light_creep" else 7.0

    windows = int(seconds // 10)
    stop_windows = set()
    w = int(rng.integers(3, 6))
    while w < windows - 1:
        if w not in planted and w - 1 not in planted and w + 1 not in planted:
            stop_windows.add(w)
        w += int(rng.integers(5, 9))

    v = float(rng.uniform(12, 18))
    x = 0.0
    mode = "cruise"
    hold_until = 0.0
    event_at: dict[int, float] = {}
    for win, typ in planted.items():
        event_at[win] = win * 10 + float(rng.uniform(2.5, 3.5))
        s.events.append(Event(typ, win * 10 + 1.0, win * 10 + 9.0))
    active: tuple[str, float] | None = None
    for i in range(n):
        ti = t[i]
        win = int(ti // 10)
        a = _clip(0.6 * float(cruise[i] - v), -1.5, 1.0)
        # a traffic light stop inside a stop window: brake to 0 at ~4 s, wait, go
        if win in stop_windows:
            local = ti - win * 10
            if mode == "cruise" and 0.5 <= local < 1.0:
                mode = "stopping"
            if mode == "stopping":
                a = -2.2 if v > 0.05 else 0.0
                if v <= 0.05:
                    mode, hold_until = "held", ti + float(rng.uniform(3, 5))
            s.light_z[i] = max(4.0, 40 - 9 * local) if local < 8 else np.nan
            s.light_red[i] = 1.0 if mode in ("stopping", "held") else 0.0
        if mode == "held":
            a = -2.0 if v > 0 else 0.0
            if ti >= hold_until:
                mode = "cruise"
        if win in event_at and active is None and event_at[win] <= ti < event_at[win] + 0.5:
            active = (planted[win], event_at[win])
        if active is not None:
            typ, t0 = active
            k = ti - t0
            if typ == "pedestrian_crossing":
                a = -6.0 if k < 2.2 and v > 0.05 else (0.0 if k < 4 else a)
                s.ped_z[i] = max(6.0, 22 - 2.0 * max(k, 0) * min(v, 10) / 10)
                s.ped_x[i] = -4.0 + 2.2 * k
            elif typ == "cut_in":
                a = -3.8 if k < 1.6 else a
                s.lead_z[i] = 14 + 2 * k
                s.lead_x[i] = 3.6 * (1 - _ss(k / 1.5))
            elif typ == "red_light_creep":
                s.light_z[i] = max(4.0, 30 - 12 * k)
                s.light_red[i] = 1.0 if k < 6.5 else 0.0
                if k < 3.0:
                    a = -2.5 if v > 0.05 else 0.0
                elif k < 3.5:
                    a = 0.0
                elif k < 5.5:  # creep forward at walking pace, still red
                    a = _clip(2.0 * (0.8 - v), -1.0, 0.6)
                elif k < 6.5:
                    a = -1.5 if v > 0.05 else 0.0
                else:
                    a = 1.2
            elif typ == "waving_person_stop":
                s.ped_z[i] = max(5.0, 35 - v * k)
                s.ped_x[i] = 4.2
                s.ped_wave[i] = 1.0
                a = -2.0 if k < 5.0 and v > 0.05 else (0.0 if k < 7 else 1.0)
            elif typ == "evasive_swerve":
                s.obstacle_z[i] = max(3.0, 30 - v * k)
                s.offset[i] = 1.8 * (_ss(k / 1.0) - _ss((k - 2.2) / 1.0))
            elif typ == "driver_takeover":
                on = 0.0 <= k < 2.0
                s.override[i] = on
                s.torque[i] = 3.5 * np.sin(np.pi * k / 2.0) if on else 0.0
                s.offset[i] = 0.5 * (_ss(k / 0.8) - _ss((k - 1.2) / 0.8))
            if k > 6.0:
                active = None
        v = max(0.0, v + a * dt)
        if v == 0.0 and a < 0:
            a = 0.0
        x += v * dt
        s.speed[i], s.accel[i], s.distance[i] = v, a, x
        s.brake[i] = a < -0.4
        s.gas[i] = _clip(a / 2.0, 0.0, 1.0) if a > 0 else 0.0
    # Lateral: path curvature = road + offset'' / v^2; steering by a bicycle model.
    s.offset = _smooth(s.offset, 0.08)
    off_dd = np.gradient(np.gradient(s.offset, dt), dt)
    vv = np.maximum(s.speed, 1.0)
    path_curv = s.road_curv + off_dd / (vv * vv)
    s.steer_deg = np.rad2deg(np.arctan(_WHEELBASE_M * path_curv)) * _STEER_RATIO
    s.steer_rate = np.gradient(s.steer_deg, dt)
    s.yaw_rate = np.rad2deg(s.speed * path_curv)
    s.lat_accel = s.speed * s.speed * path_curv
    # A lead car now and then, far enough ahead to be ordinary.
    lead_on = np.sin(2 * np.pi * t / rng.uniform(30, 60) + rng.uniform(0, 6)) > 0.3
    free = np.isnan(s.lead_z) & lead_on & np.isnan(s.light_z)
    s.lead_z[free] = 30 + 8 * np.sin(2 * np.pi * t[free] / 17)
    s.lead_x[free] = 0.0
    return s
