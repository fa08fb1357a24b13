"""Rendering a synthetic street (`world.World`) through a pinhole dashcam into an RGB image and labels.

How it stays fast and exact:
- The ground and sky are computed per pixel in closed form (each ground pixel's road coordinates (u, s) follow
  from its row and column), which makes lane markings, kerbs and paving textures anchored to the world, so the
  video does not shimmer, and costs a few vectorised numpy passes.
- Everything standing on the ground is drawn back to front (painter's algorithm) as cv2 polygons into one
  uint16 *primitive-id* buffer. Each primitive carries its class, colour, depth and texture strength in small
  lookup tables, so the label map and the image come from the same pixels (they can never disagree) and the
  drawing cost is one cv2 call per primitive.
- Shading, textures, fog, lighting, blur and sensor noise are applied once, to the whole frame, at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from csst_edge.data.cityscapes_classes import (
    BICYCLE,
    BUILDING,
    BUS,
    CAR,
    FENCE,
    MOTORCYCLE,
    NUM_CLASSES,
    PERSON,
    POLE,
    RIDER,
    ROAD,
    SIDEWALK,
    SKY,
    TERRAIN,
    TRAFFIC_LIGHT,
    TRAFFIC_SIGN,
    TRAIN,
    TRUCK,
    VEGETATION,
    WALL,
)
from csst_edge.data.synth.style import Look
from csst_edge.data.synth.world import Boundary, Building, Person, Pole, Tree, TwoWheeler, Vehicle, World

NEAR = 1.0  # metres: nearer things are culled (they would fill the frame)
FAR = 120.0  # metres: the drawing distance; the backdrop stands beyond it
_SHIFT = 4  # cv2 sub-pixel bits: small, distant objects keep their shape instead of snapping to whole pixels
_ONE = 1 << _SHIFT
_MAX_PRIMITIVES = 65535

# Texture strength (mid-scale blotches, fine grain) per class: vegetation is leafy, vehicles glossy and smooth.
_TEXTURE = np.zeros((NUM_CLASSES, 2), np.float32)
for _cls, _amp in {
    BUILDING: (0.10, 0.06),
    WALL: (0.14, 0.08),
    FENCE: (0.05, 0.05),
    POLE: (0.05, 0.04),
    TRAFFIC_LIGHT: (0.04, 0.04),
    TRAFFIC_SIGN: (0.03, 0.04),
    VEGETATION: (0.30, 0.35),
    TERRAIN: (0.2, 0.2),
    PERSON: (0.08, 0.06),
    RIDER: (0.08, 0.06),
    CAR: (0.05, 0.04),
    TRUCK: (0.07, 0.05),
    BUS: (0.05, 0.04),
    TRAIN: (0.05, 0.04),
    MOTORCYCLE: (0.05, 0.05),
    BICYCLE: (0.05, 0.05),
}.items():
    _TEXTURE[_cls] = _amp

_VEHICLE_CLASS = {"car": CAR, "truck": TRUCK, "bus": BUS, "train": TRAIN}
_DARK = np.array([25, 25, 28], np.float32)


@dataclass
class Camera:
    width: int
    height: int
    f: float  # focal length in pixels
    cx: float
    y0: float  # horizon row
    hc: float  # camera height above the road (m)
    u_cam: float  # lateral position on the road (m)
    s: float  # position along the road (m)
    k: float  # road curvature: the road centre at depth z is shifted by k z^2

    def project(self, u, y, s):
        z = np.maximum(np.asarray(s, np.float64) - self.s, NEAR)
        x = self.cx + self.f * (np.asarray(u, np.float64) - self.u_cam + self.k * z * z) / z
        return x, self.y0 - self.f * (np.asarray(y, np.float64) - self.hc) / z


def camera_for(world: World, width: int, height: int, t: float) -> Camera:
    s = world.camera_speed * t
    # the curvature drifts with distance travelled, so a drive goes through gentle bends; still frames (s=0)
    # get k = world.curve
    k = world.curve * math.cos(2 * math.pi * s / world.curve_period)
    bob = 0.003 * height * math.sin(2 * math.pi * 1.3 * t)  # suspension: a little vertical motion in the video
    return Camera(
        width,
        height,
        f=0.85 * width,
        cx=width / 2,
        y0=world.horizon * height + bob,
        hc=world.camera_height,
        u_cam=world.road.camera_u,
        s=s,
        k=k,
    )


def _fix(p: np.ndarray) -> np.ndarray:
    return np.round(np.clip(p, -20000, 20000) * _ONE).astype(np.int32)


class Canvas:
    """The primitive-id buffer plus one row of lookup tables per primitive."""

    def __init__(self, cam: Camera):
        self.cam = cam
        self.ids = np.zeros((cam.height, cam.width), np.uint16)
        self.shade = None  # ground shadows under vehicles (multiplicative), allocated on first use
        self.colour = [np.zeros(3, np.float32)]
        self.label = [255]
        self.z = [0.0]
        self.xp = [0.0]
        self.tex = [(0.0, 0.0)]
        self.emissive = [False]

    def _add(self, colour, label: int, z: float, xp: float, tex, emissive: bool) -> int:
        n = len(self.label)
        if n >= _MAX_PRIMITIVES:
            return 0
        self.colour.append(np.asarray(colour, np.float32))
        self.label.append(label)
        self.z.append(float(z))
        self.xp.append(float(xp))
        self.tex.append(tuple(_TEXTURE[label]) if tex is None else tex)
        self.emissive.append(bool(emissive))
        return n

    def polys(self, polys, colour, label: int, z: float, xp: float = 0.0, tex=None, emissive: bool = False) -> None:
        """Fill polygons (each (N, 2) pixel coordinates) as one primitive. `xp` != 0 marks a surface parallel to
        the road at lateral offset xp from the camera, whose depth varies across columns (for fog)."""
        pts = [_fix(p) for p in polys if len(p) >= 3]
        if not pts:
            return
        i = self._add(colour, label, z, xp, tex, emissive)
        if i:
            cv2.fillPoly(self.ids, pts, i, cv2.LINE_8, _SHIFT)

    def ellipse(
        self, centre, axes, colour, label: int, z: float, thickness: int = -1, tex=None, emissive: bool = False
    ) -> None:
        ax = (max(axes[0], 0.3), max(axes[1], 0.3))
        if not (-ax[0] < centre[0] < self.cam.width + ax[0] and -ax[1] < centre[1] < self.cam.height + ax[1]):
            return
        i = self._add(colour, label, z, 0.0, tex, emissive)
        if i:
            cv2.ellipse(
                self.ids,
                (int(round(centre[0] * _ONE)), int(round(centre[1] * _ONE))),
                (int(round(min(ax[0], 5000) * _ONE)), int(round(min(ax[1], 5000) * _ONE))),
                0,
                0,
                360,
                i,
                thickness,
                cv2.LINE_8,
                _SHIFT,
            )

    def lines(self, segments, width_px: float, colour, label: int, z: float, tex=None) -> None:
        """Thick line segments ((N, 2, 2) pixel coordinates) as one primitive; at least one pixel wide."""
        if not len(segments):
            return
        i = self._add(colour, label, z, 0.0, tex, False)
        if i:
            cv2.polylines(
                self.ids, [_fix(s) for s in segments], False, i, max(1, int(round(width_px))), cv2.LINE_8, _SHIFT
            )

    def shadow(self, poly, strength: float) -> None:
        if self.shade is None:
            self.shade = np.ones(self.ids.shape, np.float32)
        cv2.fillPoly(self.shade, [_fix(poly)], 1.0 - strength, cv2.LINE_8, _SHIFT)


class Local:
    """A vertical plane facing the camera at one depth: draw in metres (right, up) from a ground point."""

    def __init__(self, cam: Camera, u: float, s: float, mirror: int = 1):
        z = s - cam.s
        self.z = z
        self.scale = cam.f / z
        self.x0 = cam.cx + cam.f * (u - cam.u_cam + cam.k * z * z) / z
        self.y0 = cam.y0 + cam.f * cam.hc / z
        self.mirror = mirror

    def __call__(self, pts) -> np.ndarray:
        p = np.asarray(pts, np.float64)
        return np.stack([self.x0 + self.scale * self.mirror * p[..., 0], self.y0 - self.scale * p[..., 1]], -1)

    def rect(self, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
        return self(((x0, y0), (x1, y0), (x1, y1), (x0, y1)))

    def point(self, x: float, y: float) -> tuple[float, float]:
        return self.x0 + self.scale * self.mirror * x, self.y0 - self.scale * y

    def visible(self, cam: Camera, half_width: float, height: float) -> bool:
        if not NEAR + 0.3 < self.z < FAR:
            return False
        r = self.scale * half_width
        return -r < self.x0 < cam.width + r and self.y0 - self.scale * height < cam.height


# ----------------------------------------------------------------------------------------------------------------
# ground and sky


@lru_cache(maxsize=1)
def texture_tile() -> np.ndarray:
    """A fixed, tileable 256x256 noise texture (zero mean, ~unit spread) used to texture the ground in world
    coordinates. Fixed seed: textures are part of the world's look, not of a frame's randomness."""
    rng = np.random.default_rng(20240917)
    tile = np.zeros((256, 256), np.float32)
    for cells, weight in ((8, 1.0), (32, 0.6), (128, 0.4), (256, 0.3)):
        small = rng.standard_normal((cells, cells)).astype(np.float32)
        big = cv2.resize(np.tile(small, (3, 3)), (768, 768), interpolation=cv2.INTER_CUBIC)[256:512, 256:512]
        tile += weight * big
    return (tile - tile.mean()) / tile.std()


def _lookup(tile: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return tile[np.floor(a).astype(np.int64) & 255, np.floor(b).astype(np.int64) & 255]


def render_ground(cam: Camera, world: World, look: Look, clouds: np.ndarray):
    """Sky above the horizon, the road surface below it: (label uint8, rgb float32, depth float32)."""
    h, w = cam.height, cam.width
    label = np.empty((h, w), np.uint8)
    rgb = np.empty((h, w, 3), np.float32)
    depth = np.empty((h, w), np.float32)
    r0 = min(max(int(math.floor(cam.y0)) + 1, 0), h)

    if r0 > 0:
        t = np.clip((np.arange(r0, dtype=np.float32) + 0.5) / max(cam.y0, 1.0), 0, 1)[:, None, None] ** 0.8
        sky = look.sky_top * (1 - t) + look.sky_horizon * t
        amount = {"clear": 0.7, "overcast": 0.5, "dusk": 0.35}[look.sky]
        cover = np.clip((clouds[:r0] - 0.3) * 1.5, 0, 1)[..., None] * amount
        cloud_colour = np.array([235, 235, 238] if look.sky == "clear" else [120, 115, 125], np.float32)
        if look.sky == "overcast":
            cloud_colour = look.sky_horizon * 0.85
        rgb[:r0] = sky * (1 - cover) + cloud_colour * cover
        label[:r0] = SKY
        depth[:r0] = 0.7 * look.fog_distance  # sky gets half the fog: overcast skies blend into the haze

    if r0 < h:
        road = world.road
        rows = np.arange(r0, h, dtype=np.float64) + 0.5
        z = (cam.f * cam.hc / np.maximum(rows - cam.y0, 1e-3))[:, None]
        cols = np.arange(w, dtype=np.float64)[None, :] + 0.5
        u = (cols - cam.cx) * z / cam.f + cam.u_cam - cam.k * z * z
        s = z + cam.s
        au = np.abs(u)
        half, walk = road.half, road.half + road.sidewalk
        g = np.full(u.shape, road.outer_ground, np.uint8)
        g[au < road.lot_line] = TERRAIN
        g[au < walk] = SIDEWALK
        g[au < half] = ROAD
        if road.median > 0:
            g[au < road.median / 2] = TERRAIN
        cross = world.cross_streets
        cross = cross[(cross[:, 1] > cam.s) & (cross[:, 0] < cam.s + 1e4)] if len(cross) else cross
        in_cross = np.zeros(s.shape, bool)
        cross_edge = np.zeros(s.shape, bool)
        for c0, c1 in cross:
            inside = (s >= c0) & (s < c1)
            in_cross |= inside
            cross_edge |= inside & ((s < c0 + road.sidewalk) | (s >= c1 - road.sidewalk))
        if in_cross.any():
            side_street = in_cross & (au >= half)
            g[side_street] = ROAD
            g[side_street & cross_edge] = SIDEWALK
            g[in_cross & (au < road.median / 2)] = ROAD

        tile = texture_tile()
        fine = _lookup(tile, s * 7.0, u * 7.0)
        coarse = _lookup(tile, s * 0.6 + 91.0, u * 0.6 + 37.0)
        base = np.zeros((NUM_CLASSES, 3), np.float32)
        base[ROAD], base[SIDEWALK], base[TERRAIN] = look.road, look.sidewalk, look.terrain
        amp = np.zeros((NUM_CLASSES, 2), np.float32)
        amp[ROAD], amp[SIDEWALK], amp[TERRAIN] = (0.09, 0.10), (0.07, 0.08), (0.28, 0.22)
        factor = 1 + amp[g, 0] * fine + amp[g, 1] * coarse
        col = base[g] * factor[..., None]

        is_walk = g == SIDEWALK
        paving = is_walk & ((np.mod(u, 0.6) < 0.05) | (np.mod(s, 0.6) < 0.05))
        col[paving] *= 0.8
        kerb = ~in_cross & (
            ((au >= half) & (au < half + 0.22))
            | ((road.median > 0) & (au < road.median / 2) & (au >= road.median / 2 - 0.2))
        )
        col[kerb] = look.kerb
        g[kerb] = SIDEWALK

        on_road = (g == ROAD) & ~in_cross
        mark = np.zeros(u.shape, bool)
        centre = np.zeros(u.shape, bool)
        dashes = np.mod(s, 9.0) < 3.0
        for i in range(1, road.lanes):
            mark |= (np.abs(au - (road.median / 2 + i * road.lane_width)) < 0.07) & dashes
        if road.parking > 0:
            mark |= np.abs(au - (half - road.parking)) < 0.08
        if road.median == 0:
            if look.centre_line[2] < 100:  # yellow: a double solid line
                centre |= np.abs(au - 0.13) < 0.06
            else:
                centre |= (au < 0.07) & (dashes if road.lanes == 1 else True)
        for c0, _ in cross:
            zebra = (s >= c0 - 5.0) & (s < c0 - 1.5)
            mark |= zebra & (np.mod(u, 1.1) < 0.55)
            mark |= (s >= c0 - 6.3) & (s < c0 - 5.8) & (u > road.median / 2)
        wear = (0.8 + 0.15 * fine)[..., None]
        col[on_road & mark] = (look.marking * wear)[on_road & mark]
        col[on_road & centre] = (look.centre_line * wear)[on_road & centre]

        is_road = g == ROAD
        stains = is_road & (coarse < -1.0)
        col[stains] *= 0.85
        if look.puddles:  # wet road: puddles mirror the sky, so sky colours appear on the road
            puddle = is_road & (coarse > 0.9)
            col[puddle] = col[puddle] * 0.35 + look.sky_horizon * 0.55
        if look.sun_side:
            reach = road.lot_line + road.setback - (6.0 + 4.0 * np.sin(s / 7.0))
            col[look.sun_side * u > reach] *= 0.55
        rgb[r0:] = col
        label[r0:] = g
        depth[r0:] = z.astype(np.float32)
    return label, rgb, depth


# ----------------------------------------------------------------------------------------------------------------
# things standing on the ground


def draw_backdrop(cv: Canvas, cam: Camera, world: World) -> None:
    z = FAR * 1.6
    shift = cam.f * cam.k * z
    ground = cam.y0 + cam.f * cam.hc / z
    for angle, half, height, is_building, colour in world.skyline:
        x = cam.cx + cam.f * angle + shift
        hw, hp = cam.f * half, cam.f * height / z
        if x + hw < 0 or x - hw > cam.width:
            continue
        if is_building:
            cv.polys(
                [np.array([[x - hw, ground], [x + hw, ground], [x + hw, ground - hp], [x - hw, ground - hp]])],
                colour,
                BUILDING,
                z,
            )
        else:
            cv.ellipse((x, ground - hp * 0.4), (hw, hp * 0.7), colour, VEGETATION, z)


def _facade(cam: Camera, x: float, s0: float, s1: float, y0, y1) -> np.ndarray:
    """A band of a surface parallel to the road (lateral position x), from height y0 to y1 (scalars or per-sample
    arrays), sampled along s so that road curvature bends it."""
    n = max(2, int((s1 - s0) / 4.0) + 1)
    ss = np.linspace(s0, s1, n)
    xb, yb = cam.project(x, y0, ss)
    xt, yt = cam.project(x, y1, ss)
    xb, yb = np.broadcast_to(xb, ss.shape), np.broadcast_to(yb, ss.shape)
    return np.concatenate([np.stack([xb, yb], 1), np.stack([xt, yt], 1)[::-1]])


def _plane_quads(cam: Camera, x: float, sa, sb, ya, yb) -> np.ndarray:
    """Many small rectangles on a surface parallel to the road: (n, 4, 2) pixel corners."""
    corners = [cam.project(x, ya, sa), cam.project(x, ya, sb), cam.project(x, yb, sb), cam.project(x, yb, sa)]
    return np.stack([np.stack(c, -1) for c in corners], 1)


def _visible_range(cam: Camera, s0: float, s1: float) -> tuple[float, float] | None:
    a, b = max(s0, cam.s + NEAR), min(s1, cam.s + FAR)
    return (a, b) if a < b else None


def _facade_light(look: Look, side: int) -> float:
    if look.sun_side == 0:
        return 1.0
    return 0.7 if side == look.sun_side else 1.05


def draw_building(cv: Canvas, cam: Camera, b: Building, look: Look, lights_on: bool) -> None:
    vis = _visible_range(cam, b.s0, b.s1)
    if vis is None:
        return
    s0, s1 = vis
    x = b.side * b.u
    xp = x - cam.u_cam
    zmid = (s0 + s1) / 2 - cam.s
    light = _facade_light(look, b.side)
    if b.s0 >= cam.s + NEAR:  # the end wall of the block, facing the camera
        pts = np.stack(
            cam.project(
                np.array([x, x + b.side * b.depth, x + b.side * b.depth, x]),
                np.array([0, 0, b.height, b.height]),
                np.full(4, b.s0),
            ),
            1,
        )
        cv.polys([pts], b.colour * light * 0.8, BUILDING, b.s0 - cam.s)
    cv.polys([_facade(cam, x, s0, s1, 0.0, b.height)], b.colour * light, BUILDING, zmid, xp)
    cv.polys([_facade(cam, x, s0, s1, 0.0, min(3.3, b.height))], b.shop_colour * light, BUILDING, zmid, xp)
    cv.polys([_facade(cam, x, s0, s1, b.height - 0.5, b.height)], b.colour * light * 0.75, BUILDING, zmid, xp)
    if len(b.windows):
        win = b.windows
        keep = (win[:, 0] >= s0) & (win[:, 1] <= s1)
        for g, colour in enumerate(b.window_colours):
            sel = keep & (b.window_group == g)
            if sel.any():
                w = win[sel]
                quads = _plane_quads(cam, x, w[:, 0], w[:, 1], w[:, 2], w[:, 3])
                lit = b.window_lit[g] and lights_on
                cv.polys(list(quads), colour if lit else colour * light, BUILDING, zmid, xp, emissive=lit)


def draw_boundary(cv: Canvas, cam: Camera, bd: Boundary, look: Look) -> None:
    vis = _visible_range(cam, bd.s0, bd.s1)
    if vis is None:
        return
    s0, s1 = vis
    x = bd.side * bd.u
    xp = x - cam.u_cam
    zmid = (s0 + s1) / 2 - cam.s
    light = _facade_light(look, bd.side)
    if bd.kind == "wall":
        cv.polys([_facade(cam, x, s0, s1, 0.0, bd.height)], bd.colour * light, WALL, zmid, xp)
        cv.polys([_facade(cam, x, s0, s1, bd.height - 0.15, bd.height)], bd.colour * light * 1.15, WALL, zmid, xp)
    elif bd.kind == "hedge":
        ss = np.arange(math.floor(s0), math.ceil(s1) + 1, 1.0)
        ss = np.clip(ss, s0, s1)
        top = bd.height + bd.bumps[np.clip((ss - bd.s0).astype(int), 0, len(bd.bumps) - 1)]
        xb, yb = cam.project(x, 0.0, ss)
        xt, yt = cam.project(x, top, ss)
        pts = np.concatenate([np.stack([xb, yb], 1), np.stack([xt, yt], 1)[::-1]])
        cv.polys([pts], bd.colour * light, VEGETATION, zmid, xp)
    else:  # fence: posts, two rails and vertical bars with gaps through which the lot behind is seen
        posts = np.arange(math.ceil(s0 / 2.5) * 2.5, s1, 2.5)
        bars = np.arange(math.ceil(s0 / 0.15) * 0.15, s1, 0.15)
        colour = bd.colour * light
        if len(bars):
            quads = _plane_quads(cam, x, bars, bars + 0.04, np.zeros_like(bars), np.full_like(bars, bd.height - 0.1))
            cv.polys(list(quads), colour, FENCE, zmid, xp)
        if len(posts):
            quads = _plane_quads(cam, x, posts, posts + 0.1, np.zeros_like(posts), np.full_like(posts, bd.height))
            cv.polys(list(quads), colour * 0.8, FENCE, zmid, xp)
        for y in (0.15, bd.height - 0.12):
            cv.polys([_facade(cam, x, s0, s1, y, y + 0.07)], colour * 0.9, FENCE, zmid, xp)


def draw_pole(cv: Canvas, cam: Camera, p: Pole, lights_on: bool) -> None:
    loc = Local(cam, p.u, p.s)
    if not loc.visible(cam, max(p.arm, 1.0) + 0.5, p.height + 0.5):
        return
    z = loc.z
    half = max(0.07, 0.5 / loc.scale)  # never thinner than one pixel
    cv.polys([loc.rect(-half, half, 0.0, p.height)], p.colour, POLE, z)
    toward = -p.side  # arms reach over the road
    if p.arm > 0:
        y = p.height - 0.15
        cv.polys(
            [loc.rect(min(0, toward * p.arm), max(0, toward * p.arm), y, y + max(0.1, 0.8 / loc.scale))],
            p.colour,
            POLE,
            z,
        )
    for att in p.attachments:
        if att[0] == "lamp":
            end = toward * p.arm
            cv.ellipse(
                loc.point(end, p.height - 0.2),
                (0.35 * loc.scale, 0.12 * loc.scale),
                np.array([200, 200, 190], np.float32) if lights_on else p.colour * 1.2,
                POLE,
                z,
                emissive=lights_on,
            )
        elif att[0] == "light":
            _, y, off, housing, active = att
            cv.polys([loc.rect(off - 0.17, off + 0.17, y, y + 0.9)], housing, TRAFFIC_LIGHT, z)
            for i, on_colour in enumerate(((40, 230, 110), (255, 180, 0), (255, 40, 30))):
                on = i == active
                cv.ellipse(
                    loc.point(off, y + 0.15 + 0.3 * i),
                    (0.1 * loc.scale, 0.1 * loc.scale),
                    np.asarray(on_colour if on else (45, 45, 45), np.float32),
                    TRAFFIC_LIGHT,
                    z,
                    emissive=on,
                )
        elif att[0] == "sign":
            _, y, off, shape, face, rim, size = att
            r = size / 2
            if shape == "circle":
                cv.ellipse(loc.point(off, y), (r * loc.scale, r * loc.scale), rim, TRAFFIC_SIGN, z)
                cv.ellipse(loc.point(off, y), (0.7 * r * loc.scale, 0.7 * r * loc.scale), face, TRAFFIC_SIGN, z)
            elif shape == "triangle":
                cv.polys([loc(((off - r, y - 0.8 * r), (off + r, y - 0.8 * r), (off, y + r)))], rim, TRAFFIC_SIGN, z)
                r2 = 0.6 * r
                cv.polys(
                    [loc(((off - r2, y - 0.6 * r), (off + r2, y - 0.6 * r), (off, y + 0.5 * r)))], face, TRAFFIC_SIGN, z
                )
            else:
                wide = 1.6 if shape == "rect" else 1.0
                cv.polys([loc.rect(off - r * wide, off + r * wide, y - r, y + r)], rim, TRAFFIC_SIGN, z)
                b = 0.1 * r
                cv.polys(
                    [loc.rect(off - r * wide + b, off + r * wide - b, y - r + b, y + r - b)], face, TRAFFIC_SIGN, z
                )


def draw_tree(cv: Canvas, cam: Camera, tree: Tree, look: Look) -> None:
    loc = Local(cam, tree.u, tree.s)
    top = max(c[3] for c in tree.crown)
    if not loc.visible(cam, 3.5, tree.trunk_height + 2 * top + 1):
        return
    z = loc.z
    half = max(tree.trunk_width / 2, 0.5 / loc.scale)
    trunk_top = tree.trunk_height + top
    cv.polys(
        [loc(((-half, 0), (half, 0), (half * 0.7, trunk_top), (-half * 0.7, trunk_top)))],
        tree.trunk_colour,
        VEGETATION,
        z,
        tex=(0.12, 0.1),
    )
    cy = tree.trunk_height + top * 0.9
    light = 1.0 if look.sun_side == 0 else 1.1
    for dx, dy, rx, ry, colour in tree.crown:
        cv.ellipse(loc.point(dx, cy + dy), (rx * loc.scale, ry * loc.scale), colour * light, VEGETATION, z)


def draw_vehicle(cv: Canvas, cam: Camera, v: Vehicle, t: float, look: Look, lights_on: bool) -> None:
    s_near = v.s + v.speed * t
    z0 = s_near - cam.s
    w2, length, hgt, bh = v.width / 2, v.length, v.height, v.body_height
    # A vehicle being passed (its near end already behind the camera) keeps its side visible until it is gone:
    # culling it whole would make it vanish beside the camera in the video.
    passing = z0 <= NEAR + 0.5
    if z0 >= FAR or (passing and s_near + length <= cam.s + NEAR + 1.0):
        return
    s_vis = cam.s + NEAR + 0.5 if passing else s_near
    loc = None
    if not passing:
        loc = Local(cam, v.u, s_near)
        if not loc.visible(cam, w2 + abs(cam.f * length / max(z0, 1)) / loc.scale, hgt + 1.5):
            return
    cls = _VEHICLE_CLASS[v.kind]
    s_far = min(s_near + length, cam.s + FAR * 1.5)
    body = v.colour

    # shadow on the ground under and just around the vehicle
    foot = np.stack(
        cam.project(
            np.array([v.u - w2 * 1.1, v.u + w2 * 1.1, v.u + w2 * 1.1, v.u - w2 * 1.1]),
            np.zeros(4),
            np.array([s_near - 0.2, s_near - 0.2, s_far + 0.3, s_far + 0.3]),
        ),
        1,
    )
    cv.shadow(foot, 0.55 if look.sun_side else 0.4)

    # the side facing the camera, when the vehicle is not straight ahead
    if v.u - w2 - cam.u_cam > 0:
        xs = v.u - w2
    elif v.u + w2 - cam.u_cam < 0:
        xs = v.u + w2
    else:
        xs = None
    if xs is not None:
        xp = xs - cam.u_cam
        zm = max(z0, NEAR) + length / 2
        side = body * 0.85
        if v.kind == "car":
            cv.polys([_facade(cam, xs, s_vis, s_far, 0.3, bh)], side, cls, zm, xp)
            a, b, c, d = (0.08, 0.22, 0.62, 0.78) if v.facing > 0 else (0.22, 0.38, 0.78, 0.92)
            pts = np.stack(
                cam.project(
                    np.full(4, xs),
                    np.array([bh, hgt, hgt, bh]),
                    np.maximum(s_near + length * np.array([a, b, c, d]), s_vis),
                ),
                1,
            )
            cv.polys([pts], side, cls, zm, xp)
            glass = np.stack(
                cam.project(
                    np.full(4, xs),
                    np.array([bh + 0.05, hgt - 0.06, hgt - 0.06, bh + 0.05]),
                    np.maximum(s_near + length * np.array([a + 0.04, b + 0.02, c - 0.02, d - 0.04]), s_vis),
                ),
                1,
            )
            cv.polys([glass], v.glass, cls, zm, xp)
            wheel_r, wheels = 0.32, (s_near + 0.8, s_near + length - 0.8)
        elif v.kind == "truck":
            cab = (s_near + length - 2.2, s_near + length) if v.facing > 0 else (s_near, s_near + 2.2)
            box = (s_near, s_near + length - 2.3) if v.facing > 0 else (s_near + 2.3, s_near + length)
            if box[1] > s_vis:
                cv.polys([_facade(cam, xs, max(box[0], s_vis), min(box[1], s_far), 0.5, hgt)], side, cls, zm, xp)
            if cab[0] < s_far and cab[1] > s_vis:
                cv.polys([_facade(cam, xs, max(cab[0], s_vis), min(cab[1], s_far), 0.5, 2.8)], side * 0.9, cls, zm, xp)
                if cab[1] - 0.4 > max(cab[0] + 0.3, s_vis):
                    cv.polys(
                        [_facade(cam, xs, max(cab[0] + 0.3, s_vis), min(cab[1] - 0.4, s_far), 1.8, 2.6)],
                        v.glass,
                        cls,
                        zm,
                        xp,
                    )
            wheel_r, wheels = 0.5, (s_near + 1.2, s_near + length - 1.2)
        else:  # bus, train: long boxes with a band of windows
            cv.polys([_facade(cam, xs, s_vis, s_far, 0.3 if v.kind == "bus" else 0.5, hgt)], side, cls, zm, xp)
            ws = np.arange(s_near + 0.6, s_far - 1.6, 1.9)
            ws = ws[ws > s_vis]
            if len(ws):
                quads = _plane_quads(cam, xs, ws, ws + 1.6, np.full_like(ws, 1.3), np.full_like(ws, 2.6))
                cv.polys(list(quads), v.glass, cls, zm, xp, emissive=lights_on and v.kind == "train")
            if v.kind == "train":
                joints = np.arange(s_near + 9.0, s_far, 9.0)
                joints = joints[joints > s_vis]
                if len(joints):
                    quads = _plane_quads(
                        cam, xs, joints, joints + 0.25, np.full_like(joints, 0.5), np.full_like(joints, hgt)
                    )
                    cv.polys(list(quads), _DARK * 2, cls, zm, xp)
            wheel_r, wheels = (0.5, (s_near + 2.0, s_near + length - 2.5)) if v.kind == "bus" else (0.4, ())
        for sw in wheels:
            if s_vis + wheel_r < sw < s_far:
                (xa, xb), (ya, _) = cam.project(
                    np.array([xs, xs]), np.array([wheel_r, wheel_r]), np.array([sw - wheel_r, sw + wheel_r])
                )
                xc, yc = (xa + xb) / 2, ya
                cv.ellipse((xc, yc), (abs(xb - xa) / 2, cam.f * wheel_r / (sw - cam.s)), _DARK, cls, sw - cam.s)

    if passing:
        return
    # the face towards the camera
    z = z0
    front = v.facing < 0
    lamp = np.array([255, 245, 210] if front else [255, 40, 30], np.float32)
    lamp_lit = lights_on
    if not lights_on:
        lamp = np.array([220, 220, 210] if front else [170, 30, 30], np.float32)
    if v.kind == "car":
        for wx in (-w2 + 0.05, w2 - 0.3):
            cv.polys([loc.rect(wx, wx + 0.25, 0.0, 0.35)], _DARK, cls, z)
        cv.polys([loc.rect(-w2, w2, 0.28, bh)], body * 0.95, cls, z)
        cv.polys([loc.rect(-w2, w2, 0.28, 0.45)], body * 0.5 + 15, cls, z)
        cv.polys([loc(((-w2 + 0.08, bh), (w2 - 0.08, bh), (w2 - 0.28, hgt), (-w2 + 0.28, hgt)))], body, cls, z)
        cv.polys(
            [loc(((-w2 + 0.16, bh + 0.04), (w2 - 0.16, bh + 0.04), (w2 - 0.32, hgt - 0.06), (-w2 + 0.32, hgt - 0.06)))],
            v.glass * 1.2,
            cls,
            z,
        )
        for lx in (-w2 + 0.08, w2 - 0.38):
            cv.polys([loc.rect(lx, lx + 0.3, 0.62, 0.8)], lamp, cls, z, emissive=lamp_lit)
        cv.polys([loc.rect(-0.26, 0.26, 0.45, 0.57)], np.array([225, 225, 220], np.float32), cls, z)
        if front:
            cv.polys([loc.rect(-0.35, 0.35, 0.5, 0.68)], _DARK * 1.5, cls, z)
    elif v.kind == "truck":
        for wx in (-w2 + 0.05, w2 - 0.45):
            cv.polys([loc.rect(wx, wx + 0.4, 0.0, 0.6)], _DARK, cls, z)
        if front:
            cv.polys([loc.rect(-w2, w2, 2.9, hgt)], body, cls, z)
            cab = jitter_colour(body)
            cv.polys([loc.rect(-w2, w2, 0.45, 2.9)], cab, cls, z)
            cv.polys([loc.rect(-w2 + 0.15, w2 - 0.15, 1.8, 2.7)], v.glass * 1.2, cls, z)
            cv.polys([loc.rect(-0.6, 0.6, 0.7, 1.2)], _DARK * 1.5, cls, z)
        else:
            cv.polys([loc.rect(-w2, w2, 0.5, hgt)], body * 0.95, cls, z)
            cv.polys([loc.rect(-0.03, 0.03, 0.6, hgt - 0.1)], body * 0.6, cls, z)
            cv.polys([loc.rect(-w2, w2, 0.35, 0.5)], _DARK * 2, cls, z)
        for lx in (-w2 + 0.1, w2 - 0.4):
            cv.polys([loc.rect(lx, lx + 0.3, 0.55, 0.75)], lamp, cls, z, emissive=lamp_lit)
    else:  # bus, train
        ground = 0.3 if v.kind == "bus" else 0.5
        if v.kind == "bus":
            for wx in (-w2 + 0.1, w2 - 0.5):
                cv.polys([loc.rect(wx, wx + 0.4, 0.0, 0.4)], _DARK, cls, z)
        else:
            cv.polys([loc.rect(-w2 + 0.3, w2 - 0.3, 0.0, 0.55)], _DARK, cls, z)
        cv.polys([loc.rect(-w2, w2, ground, hgt)], body * 0.95, cls, z)
        glass_lo = 0.95 if front else 1.8
        cv.polys([loc.rect(-w2 + 0.15, w2 - 0.15, glass_lo, hgt - 0.3)], v.glass * 1.2, cls, z)
        if front and v.kind == "bus":
            cv.polys(
                [loc.rect(-w2 + 0.3, w2 - 0.3, hgt - 0.25, hgt - 0.05)],
                np.array([255, 150, 40], np.float32),
                cls,
                z,
                emissive=lights_on,
            )
        for lx in (-w2 + 0.12, w2 - 0.42):
            cv.polys([loc.rect(lx, lx + 0.3, 0.55, 0.75)], lamp, cls, z, emissive=lamp_lit)
        if v.kind == "train":  # pantograph on the roof
            segs = np.array(
                [
                    [loc.point(-0.6, hgt), loc.point(0.0, hgt + 0.9)],
                    [loc.point(0.6, hgt), loc.point(0.0, hgt + 0.9)],
                    [loc.point(-0.5, hgt + 0.9), loc.point(0.5, hgt + 0.9)],
                ]
            )
            cv.lines(segs, 0.06 * loc.scale, _DARK * 2, cls, z)


def jitter_colour(colour: np.ndarray) -> np.ndarray:
    """A related but different colour (a truck's cab vs its box), derived deterministically from the colour."""
    return np.clip(colour[[1, 2, 0]] * 0.8 + 40, 0, 255).astype(np.float32)


def draw_person(cv: Canvas, loc: Local, p: Person, label: int, phase: float, z: float) -> None:
    h = p.height
    k = h / 1.75
    sc = loc.scale
    swing = 0.13 * k * math.sin(phase)
    hip, shoulder = 0.52 * h, 0.81 * h
    for sgn in (-1, 1):
        cv.polys(
            [
                loc(
                    (
                        (sgn * 0.02 * k, hip),
                        (sgn * 0.14 * k, hip),
                        (sgn * 0.12 * k + sgn * swing, 0.0),
                        (sgn * 0.02 * k + sgn * swing, 0.0),
                    )
                )
            ],
            p.pants,
            label,
            z,
        )
    cv.polys(
        [loc(((-0.2 * k, shoulder), (0.2 * k, shoulder), (0.16 * k, hip - 0.04), (-0.16 * k, hip - 0.04)))],
        p.shirt,
        label,
        z,
    )
    for sgn in (-1, 1):
        arm_w = max(0.05 * k, 0.5 / sc)
        sx = sgn * 0.2 * k
        ex = sx + sgn * 0.04 - sgn * swing * 0.6
        cv.polys(
            [loc(((sx - arm_w, shoulder), (sx + arm_w, shoulder), (ex + arm_w, 0.5 * h), (ex - arm_w, 0.5 * h)))],
            p.shirt * 0.9,
            label,
            z,
        )
    head_r = 0.065 * h
    cy = shoulder + head_r * 1.4
    cv.ellipse(loc.point(0, cy + head_r * 0.25), (head_r * sc, head_r * 1.05 * sc), p.hair, label, z)
    cv.ellipse(loc.point(0, cy - head_r * 0.1), (head_r * 0.88 * sc, head_r * sc), p.skin, label, z)


def draw_pedestrian(cv: Canvas, cam: Camera, p: Person, t: float) -> None:
    s = p.s + p.speed * t
    loc = Local(cam, p.u, s)
    if not loc.visible(cam, 0.5, p.height + 0.2):
        return
    draw_person(cv, loc, p, PERSON, p.phase + abs(p.speed) * t * 2.6, loc.z)


def draw_two_wheeler(cv: Canvas, cam: Camera, tw: TwoWheeler, t: float, lights_on: bool) -> None:
    s = tw.s + tw.speed * t
    loc = Local(cam, tw.u, s, mirror=tw.facing if tw.view == "side" else 1)
    if not loc.visible(cam, 1.2, 2.0):
        return
    z, sc = loc.z, loc.scale
    cls = MOTORCYCLE if tw.kind == "motorcycle" else BICYCLE
    moto = tw.kind == "motorcycle"
    r = tw.rider
    if tw.view == "side":
        wheel_r, hub = (0.32, 0.7) if moto else (0.34, 0.55)
        for hx in (-hub, hub):
            if moto:
                cv.ellipse(loc.point(hx, wheel_r), (wheel_r * sc, wheel_r * sc), _DARK, cls, z)
            else:
                cv.ellipse(
                    loc.point(hx, wheel_r),
                    (wheel_r * sc, wheel_r * sc),
                    _DARK,
                    cls,
                    z,
                    thickness=max(1, int(round(0.05 * sc))),
                )
        if moto:
            cv.polys(
                [loc(((-0.75, 0.5), (-0.3, 0.85), (0.35, 0.92), (0.62, 0.75), (0.75, 0.5), (0.2, 0.33), (-0.4, 0.35)))],
                tw.colour,
                cls,
                z,
            )
            cv.polys([loc(((-0.6, 0.82), (0.05, 0.9), (0.05, 0.98), (-0.55, 0.92)))], _DARK, cls, z)
            cv.polys([loc(((0.55, 0.7), (0.72, 1.15), (0.78, 1.12), (0.62, 0.68)))], _DARK * 2, cls, z)
        else:
            frame = [
                ((-hub, wheel_r), (-0.12, 0.92)),
                ((-0.12, 0.92), (0.4, 0.95)),
                ((0.0, 0.33), (-0.12, 0.92)),
                ((0.0, 0.33), (0.4, 0.95)),
                ((0.4, 0.95), (hub, wheel_r)),
                ((0.4, 0.95), (0.35, 1.08)),
                ((-hub, wheel_r), (0.0, 0.33)),
            ]
            cv.lines(
                np.array([[loc.point(*a), loc.point(*b)] for a, b in frame]), max(1.0, 0.045 * sc), tw.colour, cls, z
            )
        if r is not None:
            hip = (-0.15, 0.98 if moto else 0.95)
            knee, foot = ((0.2, 0.78), (0.1, 0.4)) if moto else ((0.18, 0.72), (0.05, 0.35))
            shoulder = (0.08, 1.52) if moto else (0.15, 1.5)
            hand = (0.55, 1.05) if moto else (0.38, 1.06)
            lw = max(1.0, 0.12 * sc)
            cv.lines(
                np.array([[loc.point(*hip), loc.point(*knee)], [loc.point(*knee), loc.point(*foot)]]),
                lw,
                r.pants,
                RIDER,
                z,
            )
            cv.polys(
                [
                    loc(
                        (
                            (hip[0] - 0.12, hip[1]),
                            (hip[0] + 0.12, hip[1]),
                            (shoulder[0] + 0.13, shoulder[1]),
                            (shoulder[0] - 0.13, shoulder[1]),
                        )
                    )
                ],
                r.shirt,
                RIDER,
                z,
            )
            cv.lines(np.array([[loc.point(*shoulder), loc.point(*hand)]]), max(1.0, 0.09 * sc), r.shirt * 0.9, RIDER, z)
            head = (shoulder[0] + 0.05, shoulder[1] + 0.17)
            cv.ellipse(
                loc.point(*head),
                (0.13 * sc if moto else 0.11 * sc, 0.13 * sc if moto else 0.12 * sc),
                r.hair if not moto else r.shirt * 0.6 + 60,
                RIDER,
                z,
            )
        return
    # seen from behind (riding along the road)
    tyre = 0.08 if moto else 0.035
    cv.polys([loc.rect(-max(tyre, 0.5 / sc), max(tyre, 0.5 / sc), 0.0, 0.66)], _DARK, cls, z)
    if moto:
        cv.polys([loc.rect(-0.24, 0.24, 0.45, 0.92)], tw.colour, cls, z)
        cv.polys(
            [loc.rect(-0.08, 0.08, 0.6, 0.7)],
            np.array([255, 40, 30] if lights_on else [170, 30, 30], np.float32),
            cls,
            z,
            emissive=lights_on,
        )
        cv.polys([loc.rect(-0.45, 0.45, 1.02, 1.08)], _DARK, cls, z)
    else:
        cv.polys([loc.rect(-0.04, 0.04, 0.66, 0.95)], tw.colour, cls, z)
        cv.polys([loc.rect(-0.3, 0.3, 1.0, max(1.04, 1.0 + 0.6 / sc))], tw.colour, cls, z)
    if r is not None:
        hip_y = 0.98 if moto else 0.95
        for sgn in (-1, 1):
            cv.polys(
                [loc(((sgn * 0.04, hip_y), (sgn * 0.17, hip_y), (sgn * 0.2, 0.35), (sgn * 0.1, 0.35)))],
                r.pants,
                RIDER,
                z,
            )
        cv.polys([loc(((-0.2, hip_y), (0.2, hip_y), (0.22, 1.5), (-0.22, 1.5)))], r.shirt, RIDER, z)
        for sgn in (-1, 1):
            cv.lines(
                np.array([[loc.point(sgn * 0.2, 1.45), loc.point(sgn * (0.45 if moto else 0.3), 1.05)]]),
                max(1.0, 0.08 * sc),
                r.shirt * 0.9,
                RIDER,
                z,
            )
        rad = 0.14 if moto else 0.11
        head = r.hair if not moto else r.shirt * 0.6 + 60  # motorcyclists wear helmets
        cv.ellipse(loc.point(0, 1.64), (rad * sc, rad * 1.05 * sc), head, RIDER, z)


# ----------------------------------------------------------------------------------------------------------------
# the whole frame


@dataclass
class NoiseFields:
    """Screen-space noise: blotches and grain (per-primitive strength) and cloud cover."""

    mid: np.ndarray
    fine: np.ndarray
    clouds: np.ndarray

    @classmethod
    def sample(cls, rng: np.random.Generator, height: int, width: int) -> NoiseFields:
        def field(cells_h: int, cells_w: int, interp: int) -> np.ndarray:
            small = rng.standard_normal((cells_h + 1, cells_w + 1), dtype=np.float32)
            return cv2.resize(small, (width, height), interpolation=interp)

        mid = field(max(height // 10, 1), max(width // 10, 1), cv2.INTER_LINEAR)
        fine = field(max(height // 2, 1), max(width // 2, 1), cv2.INTER_LINEAR)
        clouds = field(5, 9, cv2.INTER_CUBIC)
        return cls(mid / (mid.std() + 1e-6), fine / (fine.std() + 1e-6), clouds)


@lru_cache(maxsize=8)
def _vignette(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((xx - width / 2) / (width / 2)) ** 2 + ((yy - height / 2) / (height / 2)) ** 2
    return (1.0 - 0.18 * r2 / 2)[..., None].astype(np.float32)


def render_frame(
    world: World,
    look: Look,
    width: int,
    height: int,
    t: float,
    fields: NoiseFields,
    sensor_rng: np.random.Generator,
    lights_on: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The world at time t seen by the dashcam: (RGB uint8 HxWx3, labels uint8 HxW)."""
    cam = camera_for(world, width, height, t)
    base_label, rgb, depth = render_ground(cam, world, look, fields.clouds)
    cv = Canvas(cam)
    draw_backdrop(cv, cam, world)
    # Painter's algorithm in lateral layers: building rows, then things on the lots in front of them (lawn
    # trees), then the walls/fences/hedges at the lot line, then everything on the sidewalks and the road. Each
    # layer is nearer the road than the one before. Within a layer, far to near by the distance to the nearest
    # point of each thing's footprint: sorting long vehicles by their near end alone would let a car parked
    # beside a passing tram paint over it.
    things = [(p.s, p) for p in world.props]
    things += [(m.s + m.speed * t, m) for m in world.movers]
    things = [
        (s, th)
        for s, th in things
        if cam.s + NEAR < s < cam.s + FAR or (isinstance(th, Vehicle) and s + th.length > cam.s + NEAR + 1.0)
    ]
    lot = world.road.lot_line + 0.1
    back = sorted((th for s, th in things if abs(th.u) > lot), key=lambda th: _painter_key(cam, th, t))
    front = sorted((th for s, th in things if abs(th.u) <= lot), key=lambda th: _painter_key(cam, th, t))
    for b in sorted(world.buildings, key=lambda b: -b.s0):
        draw_building(cv, cam, b, look, lights_on)
    for th in back:
        _draw_thing(cv, cam, th, t, look, lights_on)
    for bd in sorted(world.boundaries, key=lambda b: -b.s0):
        draw_boundary(cv, cam, bd, look)
    for th in front:
        _draw_thing(cv, cam, th, t, look, lights_on)
    return _compose(cv, cam, base_label, rgb, depth, look, fields, sensor_rng)


def _painter_key(cam: Camera, th, t: float) -> float:
    """Minus the squared ground distance from the camera to the nearest point of a thing (far ones first)."""
    if isinstance(th, Vehicle):
        dz = max(th.s + th.speed * t - cam.s, 0.0)
        dx = max(abs(th.u - cam.u_cam) - th.width / 2, 0.0)
    else:
        dz = max(th.s + getattr(th, "speed", 0.0) * t - cam.s, 0.0)
        dx = abs(th.u - cam.u_cam)
    return -(dz * dz + dx * dx)


def _draw_thing(cv: Canvas, cam: Camera, th, t: float, look: Look, lights_on: bool) -> None:
    if isinstance(th, Vehicle):
        draw_vehicle(cv, cam, th, t, look, lights_on)
    elif isinstance(th, Person):
        draw_pedestrian(cv, cam, th, t)
    elif isinstance(th, TwoWheeler):
        draw_two_wheeler(cv, cam, th, t, lights_on)
    elif isinstance(th, Tree):
        draw_tree(cv, cam, th, look)
    elif isinstance(th, Pole):
        draw_pole(cv, cam, th, lights_on)


def _compose(
    cv: Canvas,
    cam: Camera,
    label: np.ndarray,
    rgb: np.ndarray,
    depth: np.ndarray,
    look: Look,
    fields: NoiseFields,
    sensor_rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    # Whole-frame lookups (lut[ids]) rather than boolean-mask gathers: several times faster at these sizes.
    # Primitive 0 is "nothing drawn": its table rows are neutral and np.where keeps the ground/sky values.
    ids = cv.ids
    obj = ids > 0
    if cv.shade is not None:  # vehicle shadows darken the ground only; anything drawn on top stays lit
        rgb *= np.where(obj, np.float32(1.0), cv.shade)[..., None]
    emissive = None
    if len(cv.label) > 1:
        label = np.where(obj, np.asarray(cv.label, np.uint8)[ids], label)
        tex = np.asarray(cv.tex, np.float32)[ids]
        factor = 1.0 + tex[..., 0] * fields.mid + tex[..., 1] * fields.fine
        rgb = np.where(obj[..., None], np.stack(cv.colour).astype(np.float32)[ids] * factor[..., None], rgb)
        z = np.asarray(cv.z, np.float32)[ids]
        xp = np.asarray(cv.xp, np.float32)[ids]
        # depth of a surface parallel to the road grows towards the vanishing point
        cols = np.abs(np.arange(cam.width, dtype=np.float32) + 0.5 - cam.cx)[None, :]
        plane_z = np.clip(cam.f * np.abs(xp) / np.maximum(cols, 0.5), NEAR, FAR * 1.6)
        depth = np.where(obj, np.where(xp != 0, plane_z, z), depth)
        emissive = np.asarray(cv.emissive, bool)[ids]
    light = (look.gain * look.tint).astype(np.float32)
    lit = rgb * light
    if emissive is not None and emissive.any():
        lit = np.where(emissive[..., None], rgb, lit)
    fog = (1.0 - np.exp(-depth / np.float32(look.fog_distance)))[..., None]
    out = lit * (1 - fog) + (look.fog_colour * light).astype(np.float32) * fog
    out *= _vignette(cam.height, cam.width)
    out = cv2.GaussianBlur(out, (3, 3), 0.7)
    out += sensor_rng.standard_normal(out.shape, dtype=np.float32) * np.float32(look.noise_sigma)
    return np.clip(out, 0, 255).astype(np.uint8), label
