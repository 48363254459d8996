"""CAN logs consistent with a :class:`DriveState`, encoded with cantools from the
synthetic platform's DBC, at realistic rates and with sensor noise, written as
candump -L, Vector ASC or Vector BLF through python-can's writers.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import can
import numpy as np

from ingest.platform import load_platform
from ingest.synth.canpack import encode_columns
from ingest.synth.scenario import HZ, DriveState
from storage.errors import ConfigError

__all__ = ["FORMATS", "write_can_log"]

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


def messages(st: DriveState, start: dt.datetime, rng: np.random.Generator) -> list[can.Message]:
    db = load_platform("fleetmine_synth").database
    t0 = start.timestamp()
    duration = len(st.t) / HZ
    out: list[tuple[float, int, bytes]] = []
    for k, (name, rate) in enumerate(_RATES.items()):
        msg = db.get_message_by_name(name)
        phase = (k * 0.0013) % (1.0 / rate)
        times = np.arange(phase, duration, 1.0 / rate)
        times = times + rng.uniform(-0.0002, 0.0002, len(times))
        times = np.clip(times, 0, duration - 1e-3)
        idx = np.minimum((times * HZ).astype(int), len(st.t) - 1)
        payloads = encode_columns(msg, _values(name, st, idx, rng, k))
        out += [(round(t0 + tm, 6), msg.frame_id, d) for tm, d in zip(times.tolist(), payloads, strict=True)]
    out.sort(key=lambda m: (m[0], m[1]))
    return [
        can.Message(timestamp=t, arbitration_id=a, data=d, is_extended_id=False, channel="can0")
        for t, a, d in out
    ]


def _on_channel0(msgs: list[can.Message]) -> list[can.Message]:
    """Vector formats number channels: the log's one bus is channel 0 (written as 1)."""
    return [
        can.Message(
            timestamp=m.timestamp,
            arbitration_id=m.arbitration_id,
            data=m.data,
            is_extended_id=m.is_extended_id,
            channel=0,
        )
        for m in msgs
    ]


def write_can_log(path: Path, msgs: list[can.Message]) -> None:
    """candump -L, ASC or BLF by suffix; byte-identical for identical messages."""
    suffix = path.suffix.lower()
    if suffix == ".log":
        lines = [f"({m.timestamp:.6f}) can0 {m.arbitration_id:03X}#{m.data.hex().upper()}\n" for m in msgs]
        path.write_text("".join(lines))
        return
    if suffix == ".asc":
        buf = io.StringIO()
        writer = can.ASCWriter(buf)
        for m in _on_channel0(msgs):
            writer.on_message_received(m)
        # python-can stamps the header with the wall clock; use the log's own start.
        header = writer._format_header_datetime(dt.datetime.fromtimestamp(msgs[0].timestamp))
        text = buf.getvalue()
        writer.stop()
        lines = text.splitlines(keepends=True)
        lines[0] = f"date {header}\n"
        path.write_text("".join(lines))
        return
    if suffix == ".blf":
        with can.BLFWriter(str(path)) as blf:
            for m in _on_channel0(msgs):
                blf.on_message_received(m)
        return
    raise ConfigError(f"unknown CAN log suffix {suffix}; known: {FORMATS}")
