"""CAN logs consistent with a :class:`DriveState`, encoded with cantools from the
synthetic platform's DBC, at realistic rates and with sensor noise, written as
candump -L, Vector ASC or Vector BLF through python-can's writers.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path

import can
import numpy as np

from ingest.platform import load_platform
from ingest.synth.canpack import encode_columns
from ingest.synth.scenario import HZ, DriveState
from storage.errors import ConfigError

__all__ = ["FORMATS", "Frames", "messages", "write_can_log"]

FORMATS = (".log", ".asc", ".blf")
# message -> rate in Hz
_RATES = {
    "WHEEL_SPEEDS": 80,
    "STEERING": 100,
    "IMU": 50,
    "BRAKE": 50,
    "GAS": 50,
    "GEAR": 10,
    "TURN_SIGNALS": 10,
    "DRIVER": 100,
}


def _values(
    name: str, st: DriveState, i: np.ndarray, rng: np.random.Generator, k: int
) -> dict[str, np.ndarray]:
    """Each signal's values at samples ``i``, with sensor noise. Noise is drawn row by
    row, signal by signal (one ``(n, signals)`` draw is that order), so a seed gives the
    same bytes as it always has."""
    n = len(i)
    if name == "WHEEL_SPEEDS":
        noisy = (st.speed[i] * 3.6)[:, None] + rng.normal(0, 0.04, (n, 4))
        return {
            f"WHEEL_SPEED_{w}": np.maximum(0.0, noisy[:, c]) for c, w in enumerate(("FL", "FR", "RL", "RR"))
        }
    if name == "STEERING":
        noise = rng.normal(0, (0.05, 0.02), (n, 2))
        return {
            "STEER_ANGLE": st.steer_deg[i] + noise[:, 0],
            "STEER_RATE": np.clip(st.steer_rate[i], -16000, 16000).astype(np.float64),
            "DRIVER_TORQUE": st.torque[i] + noise[:, 1],
            "COUNTER": (k + np.arange(n)) % 16,
        }
    if name == "IMU":
        noise = rng.normal(0, (0.05, 0.03, 0.03), (n, 3))
        return {
            "YAW_RATE": st.yaw_rate[i] + noise[:, 0],
            "ACCEL_X": st.accel[i] + noise[:, 1],
            "ACCEL_Y": st.lat_accel[i] + noise[:, 2],
        }
    if name == "BRAKE":
        return {
            "BRAKE_PRESSED": st.brake[i].astype(np.int64),
            "BRAKE_PRESSURE": np.maximum(0.0, -st.accel[i]) * 12.0,
        }
    if name == "GAS":
        return {"GAS_PEDAL": np.minimum(1.27, st.gas[i])}
    if name == "GEAR":
        return {"GEAR": np.full(n, 3)}
    if name == "TURN_SIGNALS":
        return {"TURN_SIGNAL": st.turn[i].astype(np.int64)}
    if name == "DRIVER":
        return {
            "DRIVER_OVERRIDE": st.override[i].astype(np.int64),
            "ADAS_MODE": 1 + (k + np.arange(n)) % 2,
            "ADAS_SET_SPEED": np.full(n, 25.0),
            "ADAS_GAP": np.full(n, 1.8),
        }
    raise ConfigError(f"synthetic CAN has no values for message {name!r}; it writes: {list(_RATES)}")


@dataclass(frozen=True)
class Frames:
    """A log's frames in time order (ties by id), as columns: times in seconds since the
    epoch rounded to the microsecond, ids, payloads. python-can's ``Message`` objects are
    made only for the writers that need them (ASC, BLF): a candump line needs none, and
    making 400k of them was a sixth of a synthetic drive's time."""

    t: list[float]
    ids: list[int]
    data: list[bytes]

    def __len__(self) -> int:
        return len(self.t)

    def on_channel0(self) -> list[can.Message]:
        """Vector formats number channels: the log's one bus is channel 0 (written as 1)."""
        return [
            can.Message(timestamp=t, arbitration_id=a, data=d, is_extended_id=False, channel=0)
            for t, a, d in zip(self.t, self.ids, self.data, strict=True)
        ]


def messages(st: DriveState, start: dt.datetime, rng: np.random.Generator) -> Frames:
    db = load_platform("fleetmine_synth").database
    t0 = start.timestamp()
    duration = len(st.t) / HZ
    times_s: list[float] = []
    ids: list[int] = []
    data: list[bytes] = []
    for k, (name, rate) in enumerate(_RATES.items()):
        msg = db.get_message_by_name(name)
        phase = (k * 0.0013) % (1.0 / rate)
        times = np.arange(phase, duration, 1.0 / rate)
        times = times + rng.uniform(-0.0002, 0.0002, len(times))
        times = np.clip(times, 0, duration - 1e-3)
        idx = np.minimum((times * HZ).astype(int), len(st.t) - 1)
        data += encode_columns(msg, _values(name, st, idx, rng, k))
        times_s += np.round(t0 + times, 6).tolist()  # to the microsecond, as candump writes them
        ids += [msg.frame_id] * len(times)
    # By (time, id), ties kept in the order made: lexsort is stable, as list.sort was.
    order = np.lexsort((np.asarray(ids), np.asarray(times_s))).tolist()
    return Frames([times_s[i] for i in order], [ids[i] for i in order], [data[i] for i in order])


def write_can_log(path: Path, msgs: Frames) -> None:
    """candump -L, ASC or BLF by suffix; byte-identical for identical frames."""
    suffix = path.suffix.lower()
    if suffix == ".log":
        lines = [
            f"({t:.6f}) can0 {a:03X}#{d.hex().upper()}\n"
            for t, a, d in zip(msgs.t, msgs.ids, msgs.data, strict=True)
        ]
        path.write_text("".join(lines))
        return
    if suffix == ".asc":
        buf = io.StringIO()
        writer = can.ASCWriter(buf)
        for m in msgs.on_channel0():
            writer.on_message_received(m)
        # python-can stamps the header with the wall clock; use the log's own start.
        header = writer._format_header_datetime(dt.datetime.fromtimestamp(msgs.t[0]))
        text = buf.getvalue()
        writer.stop()
        lines = text.splitlines(keepends=True)
        lines[0] = f"date {header}\n"
        path.write_text("".join(lines))
        return
    if suffix == ".blf":
        with can.BLFWriter(str(path)) as blf:
            for m in msgs.on_channel0():
                blf.on_message_received(m)
        return
    raise ConfigError(f"unknown CAN log suffix {suffix}; known: {FORMATS}")
