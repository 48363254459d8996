"""Procedural dashcam frames with numpy: a road in perspective, lanes that curve with
the road, poles, a sky that changes with the drive's light, cars, pedestrians,
traffic lights and obstacles placed from the :class:`DriveState`.

A frame is drawn as colour indices (one byte a pixel), not RGB: every colour it holds
is one of a few dozen (a sky row, the ground, the road, a marking, a box's paint), so
the encoder's planes come from palettes by index (:meth:`Renderer.yuv420`), with no
RGB frame and no colour conversion of whole frames. Synthetic fleets are most of the
test suite's CPU; drawn in RGB and converted by swscale a frame cost 2.5x as much.
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
_HALF_MARK = 0.08  # m
_SPANS_M = (  # metres off the ego lane's centre: the road, then the right, left and middle lines
    (-1.5 * _LANE_W, 0.5 * _LANE_W + 0.5),
    (0.5 * _LANE_W - _HALF_MARK, 0.5 * _LANE_W + _HALF_MARK),
    (-1.5 * _LANE_W - _HALF_MARK, -1.5 * _LANE_W + _HALF_MARK),
    (-0.5 * _LANE_W - _HALF_MARK, -0.5 * _LANE_W + _HALF_MARK),
)
_SPAN_WEIGHT = np.array([1, 4, 4, 4], np.intp)  # a pixel's sum: road 1, each line 4


class Renderer:
    def __init__(self, width: int, height: int, look: Look, seed: int):
        self.w, self.h, self.look = width, height, look
        self.f = width * 0.8
        self.horizon = int(height * 0.45)
        self.seed = seed
        self._dtype = np.uint8 if self.horizon + 64 <= 256 else np.uint16  # room for the boxes' paints
        top, bottom = (np.array(c, np.float32) for c in _SKY[look.light])
        ramp = np.linspace(0, 1, self.horizon, dtype=np.float32)[:, None]
        sky = (top * (1 - ramp) + bottom * ramp).astype(np.uint8)
        # Colour indices: the sky's rows, then ground, road and marking, then each other
        # colour on its first use (:meth:`_paint`).
        self._colours: list[tuple[int, int, int]] = [(int(r), int(g), int(b)) for r, g, b in sky]
        self._ids: dict[tuple[int, ...], int] = {}
        ground, road, mark = (
            self._paint(c) for c in (_GROUND[look.light], (_ROAD[look.light],) * 3, (_MARK[look.light],) * 3)
        )
        self._kind = np.array([ground, road] + [ground] * 2 + [mark] * 12, self._dtype)  # by road + 4 * marks
        self.background = np.empty((height, width), self._dtype)
        self.background[: self.horizon] = np.arange(self.horizon, dtype=self._dtype)[:, None]
        self.background[self.horizon :] = ground
        rows = np.arange(self.horizon + 1, height, dtype=np.float32)
        self.rows = rows
        self.z = self.f * _CAM_H / (rows - self.horizon)  # depth of each ground row
        self.px_per_m = self.f / self.z
        # Each span's edges in pixels off the lane centre, per ground row (see _ground)
        self._span_lo = np.stack([a * self.px_per_m for a, _ in _SPANS_M], 1)
        self._span_hi = np.stack([b * self.px_per_m for _, b in _SPANS_M], 1)
        self._palettes: tuple[np.ndarray, ...] | None = None

    def _paint(self, colour: tuple[int, ...]) -> int:
        """The index of ``colour``, added to the palette on its first use."""
        got = self._ids.get(colour)
        if got is None:
            got = self._ids[colour] = len(self._colours)
            if got > np.iinfo(self._dtype).max:
                raise ValueError(f"more colours than a {self._dtype.__name__} frame holds")
            self._colours.append((colour[0], colour[1], colour[2]))
            self._palettes = None
        return got

    def palettes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """RGB, and BT.601 limited-range Y, U and V (what swscale makes of RGB for
        ``yuv420p``), by colour index."""
        if self._palettes is None:
            rgb = np.array(self._colours, np.float64)
            r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
            y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
            u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
            v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
            planes = (np.clip(np.rint(p), 0, 255).astype(np.uint8) for p in (y, u, v))
            self._palettes = (rgb.astype(np.uint8), *planes)
        return self._palettes  # type: ignore[return-value]

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
            img[a:b, c:d] = self._paint(color)

    def _ground(self, st: DriveState, i: int, out: np.ndarray) -> None:
        """The road and its markings on the ground rows, as colour indices into ``out``.

        Per row, the road and each marking are one span of columns (``lo < column < hi``
        in pixels, from metres off the lane centre at that row's depth), so a row is a few
        runs of one colour: the spans' edges sorted along the row, their weights summed
        (road 1, each marking 4) give each run's colour, and one ``np.repeat`` writes every
        row's runs, where testing each pixel against each edge took twenty passes over
        the frame."""
        centre = self._x(self._lateral(st, i, self.z), self.z)[:, None]
        dashed = ((self.z + st.distance[i]) % 12.0) < 4.0
        rows = len(dashed)
        first = np.clip(np.floor(centre + self._span_lo) + 1, 0, self.w).astype(np.intp)
        end = np.clip(np.ceil(centre + self._span_hi), 0, self.w).astype(np.intp)
        weight = np.where(first < end, _SPAN_WEIGHT, 0)
        weight[:, 3] *= dashed  # the middle line is dashed
        edge = np.zeros((rows, 1), np.intp)
        at = np.concatenate([edge, first, end, edge + self.w], 1)
        step = np.concatenate([edge, weight, -weight, edge], 1)
        order = np.argsort(at, axis=1, kind="stable")
        at = np.take_along_axis(at, order, 1)
        level = np.cumsum(np.take_along_axis(step, order, 1), axis=1)[:, :-1]  # colour of [at[k], at[k+1])
        runs = np.take(self._kind, level, mode="clip")
        out.reshape(-1)[:] = np.repeat(runs.ravel(), np.diff(at, axis=1).ravel())

    def indices(self, st: DriveState, i: int) -> np.ndarray:
        """The frame at sample ``i`` as colour indices ``(h, w)`` (see :meth:`palettes`)."""
        img = self.background.copy()
        self._ground(st, i, img[self.horizon + 1 :])
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
            # Per-frame randomness keyed by (drive seed, sample): a re-recorded stretch
            # renders the same rain as the original.
            rng = self._rng(st, i)
            ys = rng.integers(0, self.h - 8, 400)
            xs = rng.integers(0, self.w, 400)
            drop = self._paint((200, 200, 200))
            for k in range(6):
                img[ys + k, xs] = drop
        return img

    def _rng(self, st: DriveState, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, st.origin + i])

    @property
    def planar(self) -> bool:
        """Whether :meth:`yuv420` can draw this look: even sizes, and no exposure change
        or sensor noise (those are per pixel, not per colour)."""
        return self.w % 2 == 0 and self.h % 2 == 0 and not (self.look.brightness or self.look.noise)

    def yuv420(self, st: DriveState, i: int) -> np.ndarray:
        """The frame as ``yuv420p`` planes in one ``(h * 3 / 2, w)`` array (PyAV's
        ``VideoFrame.from_ndarray`` layout); chroma is each 2x2 block's mean."""
        if not self.planar:
            raise ValueError("this look is drawn in RGB only (see Renderer.planar)")
        img = self.indices(st, i)
        _, y, u, v = self.palettes()
        h, w = self.h, self.w
        out = np.empty((h * 3 // 2, w), np.uint8)
        np.take(y, img, out=out[:h], mode="clip")
        q = h // 4
        corners = (img[0::2, 0::2], img[0::2, 1::2], img[1::2, 0::2], img[1::2, 1::2])
        total = np.empty((h // 2, w // 2), np.uint16)
        part = np.empty_like(total)
        for plane, rows in ((u, out[h : h + q]), (v, out[h + q :])):
            wide = plane.astype(np.uint16)
            np.take(wide, corners[0], out=total, mode="clip")
            for c in corners[1:]:
                total += np.take(wide, c, out=part, mode="clip")
            total += 2
            np.right_shift(total, 2, out=total)
            rows.reshape(h // 2, w // 2)[:] = total  # each 2x2 block's mean
        return out

    def frame(self, st: DriveState, i: int) -> np.ndarray:
        """The frame at sample ``i`` as RGB ``(h, w, 3)``, with the look's exposure and noise."""
        img = self.indices(st, i)
        rgb = self.palettes()[0][img]
        if not (self.look.brightness or self.look.noise):
            return rgb
        out = rgb.astype(np.float32) + self.look.brightness
        if self.look.noise:
            rng = self._rng(st, i)
            if self.look.light == "rain":  # the draws the rain took come first
                rng.integers(0, self.h - 8, 400), rng.integers(0, self.w, 400)
            out += rng.normal(0, self.look.noise, rgb.shape).astype(np.float32)
        return np.clip(out, 0, 255).astype(np.uint8)
