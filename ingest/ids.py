"""Deterministic ids: ``YYYYMMDD-<hash>``, no dots (WebDataset keys end at the first dot)."""

from __future__ import annotations

import datetime as dt
import hashlib

__all__ = ["clip_id", "drive_id", "group_id"]


def _h(*parts: str) -> str:
    return hashlib.sha1("/".join(parts).encode()).hexdigest()[:20]


def drive_id(day: dt.date, vehicle_id: str, drive: str) -> str:
    return f"{day:%Y%m%d}-{_h(vehicle_id, drive)}"


def clip_id(day: dt.date, vehicle_id: str, drive: str, camera: str, start: dt.datetime) -> str:
    ms = round(start.timestamp() * 1000)
    return f"{day:%Y%m%d}-{_h(vehicle_id, drive, camera, str(ms))}"


def group_id(day: dt.date, vehicle_id: str, drive: str, window_start: dt.datetime) -> str:
    """The clips of every camera of one drive's time window (see ``ingest.timegrid``)."""
    ms = round(window_start.timestamp() * 1000)
    return f"{day:%Y%m%d}-g{_h(vehicle_id, drive, 'group', str(ms))}"
