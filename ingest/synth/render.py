"""Procedural dashcam frames with numpy: a road in perspective, lanes that curve with
the road, poles, a sky that changes with the drive's light, cars, pedestrians,
traffic lights and obstacles placed from the :class:`DriveState`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ingest.synth.scenario import DriveState

__all__ = ["LIGHTS", "Look", "Renderer"]

LIGHTS = ("day", "dusk", "night", "rain")
_CAM_H = 1.4  # m
_LANE_W = 3.6


@dataclass(frozen=True)
class Look:
    light: str
    brightness: float = 0.0  # added to every pixel (near-duplicates differ here)
    noise: float = 0.0  # std of per-pixel noise


_SKY = {
    "day": ((110, 160, 225), (190, 215, 240)),
    "dusk": ((70, 60, 110), (235, 140, 90)),
    "night": ((5, 8, 20), (25, 30, 50)),
    "rain": ((90, 95, 105), (140, 145, 150)),
}
_GROUND = {"day": (85, 110, 70), "dusk": (70, 70, 60), "night": (15, 18, 15), "rain": (70, 80, 70)}
_ROAD = {"day": 95, "dusk": 80, "night": 28, "rain": 70}
_MARK = {"day": 235, "dusk": 210, "night": 150, "rain": 200}


class Renderer:
    def __init__(self, width: int, height: int, look: Look, seed: int):
        self.w, self.h, self.look = width, height, look
        self.f = width * 0.8
        self.horizon = int(height * 0.45)
        self.seed = seed
        top, bottom = (np.array(c, np.float32) for c in _SKY[look.light])
        ramp = np.linspace(0, 1, self.horizon, dtype=np.float32)[:, None]
        sky = top * (1 - ramp) + bottom * ramp
        self.background = np.empty((height, width, 3), np.uint8)
        self.background[: self.horizon] = sky[:, None, :].astype(np.uint8)
        self.background[self.horizon :] = np.array(_GROUND[look.light], np.uint8)
        self.palette = np.array(
            [_GROUND[look.light], (_ROAD[look.light],) * 3, (_MARK[look.light],) * 3], dtype=np.uint8
        )
        rows = np.arange(self.horizon + 1, height, dtype=np.float32)
        self.rows = rows
        self.z = self.f * _CAM_H / (rows - self.horizon)  # depth of each ground row
        self.cols = np.arange(width, dtype=np.float32)[None, :]

    def _x(self, x_world: np.ndarray | float, z: np.ndarray | float) -> np.ndarray:
        return self.w / 2 + self.f * np.asarray(x_world) / np.asarray(z)

    def _lateral(self, st: DriveState, i: int, z: np.ndarray | float) -> np.ndarray:
        """Where the ego lane's centre is, at depth z, relative to the camera."""
        zc = np.minimum(np.asarray(z), 120.0)  # beyond ~120 m the road is at the horizon
        return st.road_curv[i] * zc**2 / 2 - st.offset[i]

    def _box(
        self,
        img: np.ndarray,
        cx: float,
        z: float,
        wid: float,
        hgt: float,
        color: tuple[int, ...],
        lift: float = 0.0,
    ) -> None:
        if not np.isfinite(z) or z < 2.0:
            return
        x0, x1 = float(self._x(cx - wid / 2, z)), float(self._x(cx + wid / 2, z))
        y_ground = self.horizon + self.f * _CAM_H / z
        y1 = y_ground - self.f * lift / z
        y0 = y1 - self.f * hgt / z
        a, b = int(max(0, y0)), int(min(self.h, y1))
        c, d = int(max(0, x0)), int(min(self.w, x1))
        if a < b and c < d:
            img[a:b, c:d] = color

    def frame(self, st: DriveState, i: int) -> np.ndarray:
        # Per-frame randomness keyed by (drive seed, sample): a re-recorded stretch
        # renders the same rain as the original.
        rng = np.random.default_rng([self.seed, st.origin + i])
        img = self.background.copy()
        centre = self._x(self._lateral(st, i, self.z), self.z)[:, None]
        px_per_m = (self.f / self.z)[:, None]
        u = (self.cols - centre) / px_per_m  # metres from the ego lane centre, per pixel
        road = (u > -1.5 * _LANE_W) & (u < 0.5 * _LANE_W + 0.5)
        dashed = ((self.z[:, None] + st.distance[i]) % 12.0) < 4.0
        half = 0.08
        marks = (np.abs(u - 0.5 * _LANE_W) < half) | (np.abs(u + 1.5 * _LANE_W) < half)
        marks |= (np.abs(u + 0.5 * _LANE_W) < half) & dashed
        label = road.astype(np.uint8) + marks.astype(np.uint8)
        # np.take into the frame: the palette's rows without the temporary a fancy index
        # makes (a third of a frame's time, the same bytes); mode="clip" because "raise"
        # buffers ``out`` (the indices are 0..2 either way)
        np.take(
            self.palette, np.minimum(label * 2 - road, 2), axis=0, out=img[self.horizon + 1 :], mode="clip"
        )
        # Poles every 25 m on the right.
        pole_phase = (self.z + st.distance[i]) % 25.0
        for zp in np.unique(np.round(self.z[pole_phase < 0.6], 0))[:8]:
            self._box(img, float(self._lateral(st, i, zp)) + 6.0, float(zp), 0.25, 4.0, (60, 60, 60))
        # Traffic light, lead car, obstacle, pedestrian.
        if np.isfinite(st.light_z[i]):
            zl = float(st.light_z[i])
            xl = float(self._lateral(st, i, zl)) + 3.2
            self._box(img, xl, zl, 0.2, 3.0, (40, 40, 40))
            self._box(img, xl, zl, 0.5, 1.0, (20, 20, 20), lift=3.0)
            lamp = (230, 30, 30) if st.light_red[i] > 0.5 else (30, 220, 60)
            self._box(img, xl, zl, 0.3, 0.3, lamp, lift=3.55 if st.light_red[i] > 0.5 else 3.1)
        if np.isfinite(st.lead_z[i]):
            zc = float(st.lead_z[i])
            xc = float(self._lateral(st, i, zc)) + float(st.lead_x[i])
            self._box(img, xc, zc, 1.8, 1.4, (150, 30, 35), lift=0.3)
            self._box(img, xc, zc, 1.9, 0.3, (30, 30, 30))
            self._box(img, xc, zc, 1.4, 0.5, (60, 70, 90), lift=1.2)
            self._box(img, xc - 0.7, zc, 0.25, 0.15, (255, 40, 40), lift=0.8)
            self._box(img, xc + 0.7, zc, 0.25, 0.15, (255, 40, 40), lift=0.8)
        if np.isfinite(st.obstacle_z[i]):
            zo = float(st.obstacle_z[i])
            self._box(img, float(self._lateral(st, i, zo)), zo, 1.2, 0.9, (200, 120, 20))
        if np.isfinite(st.ped_z[i]):
            zp = float(st.ped_z[i])
            xp = float(self._lateral(st, i, zp)) + float(st.ped_x[i])
            self._box(img, xp, zp, 0.45, 0.85, (30, 40, 120))  # legs
            self._box(img, xp, zp, 0.5, 0.65, (220, 200, 40), lift=0.85)  # jacket
            self._box(img, xp, zp, 0.25, 0.25, (230, 180, 150), lift=1.5)  # head
            if st.ped_wave[i] > 0:
                up = np.sin(st.t[i] * 8) > 0
                self._box(img, xp - 0.4, zp, 0.12, 0.5, (220, 200, 40), lift=1.45 if up else 1.15)
        if self.look.light == "rain":
            n = 400
            ys = rng.integers(0, self.h - 8, n)
            xs = rng.integers(0, self.w, n)
            for k in range(6):
                img[ys + k, xs] = 200
        if not (self.look.brightness or self.look.noise):
            return img
        out = img.astype(np.float32) + self.look.brightness
        if self.look.noise:
            out += rng.normal(0, self.look.noise, img.shape).astype(np.float32)
        return np.clip(out, 0, 255).astype(np.uint8)
