"""A procedural street as a list of things placed in road coordinates, independent of any camera.

Coordinates: `s` runs along the road (metres, forward), `u` across it (metres, right positive, 0 = road centre
line), `y` up from the ground. A still frame is the world seen from s = 0; the dashcam video moves the camera
along s through the same world (moving things have a `speed` along s), which is what makes it temporally
coherent: nothing is re-drawn at random between frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from csst_edge.data.synth.style import CityStyle, jitter, pick


@dataclass
class Road:
    lanes: int  # per direction
    lane_width: float
    parking: float  # parking-lane width on each side (0: none)
    median: float  # width of the planted median (0: none; then a painted centre line)
    sidewalk: float
    verge: float
    setback: float
    outer_ground: int
    camera_lane: int

    @property
    def half(self) -> float:
        """Distance from the centre line to the kerb."""
        return self.median / 2 + self.lanes * self.lane_width + self.parking

    @property
    def lot_line(self) -> float:
        """Where private lots start (walls, fences, hedges stand here)."""
        return self.half + self.sidewalk + self.verge

    def lane_centre(self, i: int) -> float:
        """Centre of lane i on the right-hand (camera) side; negative i-1.. gives the oncoming lanes."""
        return self.median / 2 + (i + 0.5) * self.lane_width

    @property
    def camera_u(self) -> float:
        return self.lane_centre(self.camera_lane)


@dataclass
class Building:
    side: int
    s0: float
    s1: float
    u: float  # facade distance from the centre line
    depth: float
    height: float
    colour: np.ndarray
    shop_colour: np.ndarray
    windows: np.ndarray  # (n, 4): s_a, s_b, y_a, y_b of each window on the facade
    window_group: np.ndarray  # (n,) index into window_colours
    window_colours: list[np.ndarray]
    window_lit: list[bool]


@dataclass
class Boundary:
    kind: str  # wall | fence | hedge
    side: int
    s0: float
    s1: float
    u: float
    height: float
    colour: np.ndarray
    bumps: np.ndarray | None = None  # hedge top profile, one value per metre


@dataclass
class Pole:
    s: float
    side: int
    u: float
    height: float
    colour: np.ndarray
    # ("lamp",) | ("light", y, offset, housing colour, active lamp 0..2)
    # | ("sign", y, offset, shape, face colour, rim colour, size)
    attachments: list[tuple] = field(default_factory=list)
    arm: float = 0.0  # horizontal arm towards the road (metres), drawn as pole


@dataclass
class Tree:
    s: float
    u: float
    trunk_height: float
    trunk_width: float
    trunk_colour: np.ndarray
    crown: list[tuple]  # (dx, dy, rx, ry, colour) in metres around the crown centre


@dataclass
class Vehicle:
    kind: str  # car | truck | bus | train
    s: float  # nearest end at t = 0
    u: float
    speed: float
    length: float
    width: float
    height: float
    body_height: float
    colour: np.ndarray
    glass: np.ndarray
    facing: int  # +1 drives away from the camera (rear visible), -1 oncoming (front visible)


@dataclass
class Person:
    s: float
    u: float
    speed: float
    height: float
    shirt: np.ndarray
    pants: np.ndarray
    skin: np.ndarray
    hair: np.ndarray
    phase: float


@dataclass
class TwoWheeler:
    kind: str  # bicycle | motorcycle
    s: float
    u: float
    speed: float
    view: str  # side | rear
    facing: int  # side view: +1 points right, -1 left
    colour: np.ndarray
    rider: Person | None


@dataclass
class World:
    road: Road
    cross_streets: np.ndarray  # (n, 2) s intervals of side streets, sorted
    buildings: list[Building]
    boundaries: list[Boundary]
    props: list  # poles and trees
    movers: list  # vehicles, persons, two-wheelers
    skyline: list[tuple]  # (angle, half width, height, is_building, colour) of the far backdrop
    camera_height: float
    horizon: float  # fraction of the image height
    camera_speed: float
    curve: float
    curve_period: float


def _poisson_positions(rng, rate: float, s0: float, s1: float) -> np.ndarray:
    n = rng.poisson(max(rate * (s1 - s0), 0.0))
    return np.sort(rng.uniform(s0, s1, n))


def _in_cross(cross: np.ndarray, s: float, margin: float = 0.0) -> bool:
    return bool(np.any((cross[:, 0] - margin <= s) & (s < cross[:, 1] + margin))) if len(cross) else False


def _next_cross(cross: np.ndarray, s: float) -> float:
    ahead = cross[cross[:, 0] > s, 0] if len(cross) else np.empty(0)
    return float(ahead[0]) if len(ahead) else math.inf


def sample_person(rng, style: CityStyle, s: float, u: float, speed: float) -> Person:
    skin = jitter(rng, pick(rng, ((230, 190, 160), (190, 140, 100), (120, 80, 55), (240, 210, 185))), 10)
    return Person(
        s=s,
        u=u,
        speed=speed,
        height=float(rng.uniform(1.55, 1.95)),
        shirt=jitter(rng, pick(rng, style.clothes_colours)),
        pants=jitter(rng, pick(rng, style.clothes_colours)),
        skin=skin,
        hair=jitter(rng, pick(rng, ((30, 25, 20), (90, 60, 30), (200, 170, 110), (120, 120, 120)))),
        phase=float(rng.uniform(0, 2 * math.pi)),
    )


def generate_world(
    rng: np.random.Generator, style: CityStyle, far: float = 120.0, duration: float = 0.0, camera_speed: float = 0.0
) -> World:
    """Everything a camera moving from s = 0 at `camera_speed` m/s sees within `far` metres for `duration` s."""
    lanes = int(pick(rng, style.lanes_per_direction))
    road = Road(
        lanes=lanes,
        lane_width=float(rng.uniform(*style.lane_width)),
        parking=float(rng.uniform(2.0, 2.5)) if rng.random() < style.parking_lane_prob else 0.0,
        median=float(rng.uniform(*style.median_width)) if rng.random() < style.median_prob else 0.0,
        sidewalk=float(rng.uniform(*style.sidewalk_width)),
        verge=float(rng.uniform(*style.verge_width)),
        setback=float(rng.uniform(*style.setback)),
        outer_ground=style.outer_ground,
        camera_lane=int(rng.integers(lanes)),
    )
    travel = camera_speed * duration
    s_lo, s_hi = -15.0, far + travel + 10.0  # static things the camera can see during the run

    def span(speed: float) -> tuple[float, float]:
        """Start positions from which a thing moving at `speed` is in view at some time of the run."""
        drift = (camera_speed - speed) * duration
        return -15.0 + min(0.0, drift), far + 10.0 + max(0.0, drift)

    # side streets: gaps in the building rows, zebra crossings and traffic lights
    cross = []
    s = float(rng.uniform(5.0, style.cross_street_every[1]))
    while s < s_hi:
        width = float(rng.uniform(9.0, 14.0))
        cross.append((s, s + width))
        s += width + float(rng.uniform(*style.cross_street_every))
    cross_arr = np.asarray(cross, np.float64).reshape(-1, 2)

    buildings, boundaries, props, movers = [], [], [], []
    half, lot = road.half, road.lot_line
    for side in (-1, 1):
        s = s_lo
        while s < s_hi:
            if _in_cross(cross_arr, s):
                s = float(cross_arr[(cross_arr[:, 0] <= s) & (s < cross_arr[:, 1])][0, 1]) + 0.01
                continue
            length = min(float(rng.uniform(*style.building_length)), _next_cross(cross_arr, s) - s)
            has_building = rng.random() >= style.building_gap_prob and length > 4.0
            if has_building:
                buildings.append(_building(rng, style, side, s, s + length, lot + road.setback))
            # A (no setback): walls and fences only close the gaps; B: lots are fenced in front of the houses too
            if not has_building or road.setback > 1.5:
                kind = ("wall", "fence", "hedge", None)[int(rng.choice(4, p=style.boundary_probs))]
                if kind is not None:
                    boundaries.append(_boundary(rng, style, kind, side, s, s + length, lot + 0.2))
            s += length
        # trees along the kerb and on the verge / lawns
        s = s_lo + float(rng.uniform(0, style.tree_spacing[1]))
        while s < s_hi:
            if not _in_cross(cross_arr, s, 2.0) and rng.random() < style.tree_prob:
                u = half + (road.sidewalk + road.verge / 2 if road.verge > 1.0 else 0.7)
                props.append(_tree(rng, style, s, side * u))
            s += float(rng.uniform(*style.tree_spacing))
        if road.setback > 2.0:
            for s in _poisson_positions(rng, style.lawn_tree_rate, s_lo, s_hi):
                if not _in_cross(cross_arr, s, 3.0):
                    props.append(_tree(rng, style, s, side * float(rng.uniform(lot + 1.0, lot + road.setback - 1.0))))
        # street lamps, signs
        s = s_lo + float(rng.uniform(0, 30))
        while s < s_hi:
            if not _in_cross(cross_arr, s, 1.0):
                props.append(
                    Pole(
                        s=s,
                        side=side,
                        u=side * (half + 0.4),
                        height=float(rng.uniform(6.5, 9.0)),
                        colour=jitter(rng, pick(rng, ((90, 95, 100), (60, 65, 60), (150, 150, 150)))),
                        attachments=[("lamp",)],
                        arm=float(rng.uniform(1.0, 2.5)),
                    )
                )
            s += float(rng.uniform(22.0, 40.0))
        for s in _poisson_positions(rng, 0.025, s_lo, s_hi):
            if not _in_cross(cross_arr, s, 1.0):
                props.append(_sign_pole(rng, s, side, side * (half + 0.35)))
        # traffic lights at the near corner of every side street; an overhead one for the camera's direction
        for c0, c1 in cross_arr:
            if side == 1:
                props.append(
                    _light_pole(
                        rng,
                        c0 - 1.5,
                        side,
                        side * (half + 0.5),
                        overhead=rng.random() < 0.6,
                        reach=half - road.median / 2,
                    )
                )
            else:
                props.append(_light_pole(rng, c1 + 1.5, side, side * (half + 0.5), overhead=False, reach=0.0))
        # pedestrians on the sidewalk, sometimes in small groups
        for s in _poisson_positions(rng, style.person_rate, *span(0.0)):
            if _in_cross(cross_arr, s):
                continue
            speed = 0.0 if rng.random() < 0.35 else float(rng.choice([-1, 1]) * rng.uniform(1.0, 1.6))
            for _ in range(1 if rng.random() < 0.7 else int(rng.integers(2, 4))):
                u = side * float(rng.uniform(half + 0.5, half + road.sidewalk - 0.3))
                movers.append(sample_person(rng, style, s + float(rng.uniform(-0.8, 0.8)), u, speed))
        # parked bicycles and motorcycles
        for kind, rate in (("bicycle", style.parked_bicycle_rate), ("motorcycle", style.parked_motorcycle_rate)):
            for s in _poisson_positions(rng, rate, s_lo, s_hi):
                if not _in_cross(cross_arr, s):
                    u = side * (half + (road.sidewalk - 0.6 if kind == "bicycle" else -0.9))
                    movers.append(_two_wheeler(rng, kind, s, u, 0.0, "side", None))

    # pedestrians on the zebra crossings
    for c0, _ in cross_arr:
        if rng.random() < 0.35:
            for _ in range(int(rng.integers(1, 4))):
                movers.append(
                    sample_person(rng, style, c0 - float(rng.uniform(2.0, 4.5)), float(rng.uniform(-half, half)), 0.0)
                )

    # traffic: lanes keep one speed so cars never drive through each other
    for i in range(road.lanes):
        for direction in (1, -1):
            u = direction * road.lane_centre(i)
            if direction == 1 and i == road.camera_lane:
                speed, start = camera_speed, float(rng.uniform(7.0, 35.0))  # the car ahead keeps its distance
            elif direction == 1:
                speed, start = camera_speed * float(rng.uniform(0.6, 1.3)), None
            else:
                speed, start = -float(rng.uniform(8.0, 14.0)), None
            lo, hi = span(speed)
            s = start if start is not None else lo + float(rng.uniform(0, 10))
            while s < hi:
                v = _vehicle(rng, style, s, u, speed, direction)
                movers.append(v)
                s += v.length + float(rng.uniform(*style.car_gap))
    if road.parking > 0:
        for side in (-1, 1):
            s = s_lo
            while s < s_hi:
                length = float(rng.uniform(4.0, 4.8))
                if (
                    not _in_cross(cross_arr, s, 4.0)
                    and not _in_cross(cross_arr, s + length, 4.0)
                    and rng.random() < style.parked_car_prob
                ):
                    facing = int(rng.choice([-1, 1]))
                    movers.append(
                        _vehicle(
                            rng, style, s, side * (half - road.parking / 2), 0.0, facing, kind="car", length=length
                        )
                    )
                s += length + float(rng.uniform(0.6, 3.0))
    # riders on the right edge of each carriageway (rare), and trams (rarer still)
    for direction in (1, -1):
        speed0 = direction * 5.0
        for s in _poisson_positions(rng, style.rider_rate, *span(speed0)):
            kind = "motorcycle" if rng.random() < 0.4 else "bicycle"
            speed = direction * float(rng.uniform(4.0, 7.0) if kind == "bicycle" else rng.uniform(7.0, 11.0))
            u = direction * (half - road.parking - 0.9)
            rider = sample_person(rng, style, s, u, speed)
            movers.append(_two_wheeler(rng, kind, s, u, speed, "rear", rider))
    for s in _poisson_positions(rng, style.train_rate, s_lo - 40.0, s_hi):
        direction = int(rng.choice([-1, 1]))
        u = 0.0 if road.median > 0 else direction * road.lane_centre(0)
        movers.append(_vehicle(rng, style, s, u, direction * float(rng.uniform(4.0, 10.0)), direction, kind="train"))

    movers = _resolve_conflicts(movers, road, duration, camera_speed)

    skyline = []
    angle = -1.6
    while angle < 1.6:
        w = float(rng.uniform(0.03, 0.12))
        is_building = rng.random() < (0.75 if style.name == "A" else 0.45)
        colour = jitter(rng, pick(rng, style.building_colours if is_building else style.vegetation_colours))
        skyline.append(
            (angle + w, w, float(rng.uniform(12, 40) if is_building else rng.uniform(8, 18)), is_building, colour)
        )
        angle += 2 * w * float(rng.uniform(0.7, 1.1))
    return World(
        road=road,
        cross_streets=cross_arr,
        buildings=buildings,
        boundaries=boundaries,
        props=props,
        movers=movers,
        skyline=skyline,
        camera_height=float(rng.uniform(*style.camera_height)),
        horizon=float(rng.uniform(*style.horizon)),
        camera_speed=camera_speed,
        curve=float(rng.uniform(-style.curve, style.curve)),
        curve_period=float(rng.uniform(150, 400)),
    )


def _footprint(m) -> tuple[float, float, int]:
    """(length along s, half width across, priority) of a thing that may stand on the carriageway."""
    if isinstance(m, Vehicle):
        return m.length, m.width / 2, 0 if m.kind == "train" else 2
    if isinstance(m, TwoWheeler):
        return 1.9, 0.4, 1
    return 0.6, 0.3, 3


def _resolve_conflicts(movers: list, road: Road, duration: float, camera_speed: float) -> list:
    """Drop things that would overlap another (or the camera's own car) at some time of the run.

    Lanes keep one speed, but trams, riders and pedestrians on the zebra share lanes with cars, and in the video
    the camera drives through its lane: without this, objects would pass through each other. Higher-priority
    things (trams, then riders, which are rare and worth keeping) win; sidewalk pedestrians are not involved.
    """
    times = np.linspace(0.0, duration, 25) if duration > 0 else np.zeros(1)
    # the camera's car: 4.5 m long, its front bumper 1 m ahead of the camera
    accepted = [(-3.5, camera_speed, 4.5, road.camera_u, 1.0)]
    kept, candidates = [], []
    for m in movers:
        on_road = abs(m.u) < road.half - 0.2
        if not on_road:
            kept.append(m)
            continue
        candidates.append(m)
    candidates.sort(key=lambda m: _footprint(m)[2])
    for m in candidates:
        length, half_width, _ = _footprint(m)
        start = m.s + m.speed * times
        clash = False
        for s0, v0, l0, u0, w0 in accepted:
            if abs(m.u - u0) >= half_width + w0:
                continue
            other = s0 + v0 * times
            if np.any((start < other + l0 + 1.0) & (other < start + length + 1.0)):
                clash = True
                break
        if not clash:
            accepted.append((m.s, m.speed, length, m.u, half_width))
            kept.append(m)
    return kept


def _building(rng, style: CityStyle, side: int, s0: float, s1: float, u: float) -> Building:
    height = float(rng.uniform(*style.building_height))
    floor = float(rng.uniform(*style.floor_height))
    spacing = float(rng.uniform(2.2, 4.0))
    win_w, win_h = float(rng.uniform(0.35, 0.7)) * spacing, float(rng.uniform(0.35, 0.6)) * floor
    rows = np.arange(floor + (floor - win_h) / 2, height - floor * 0.6, floor)
    cols = np.arange(s0 + (spacing - win_w) / 2 + 0.3, s1 - win_w - 0.3, spacing)
    sa, ya = np.meshgrid(cols, rows)
    windows = np.stack([sa.ravel(), sa.ravel() + win_w, ya.ravel(), ya.ravel() + win_h], 1).reshape(-1, 4)
    n_colours = 3
    base = pick(rng, style.window_colours)
    colours = [jitter(rng, base, 20) for _ in range(n_colours)]
    lit = [False] * n_colours
    if style.lit_window_prob > 0:
        colours.append(jitter(rng, (255, 210, 140), 10))
        lit.append(True)
    group = rng.integers(0, n_colours, len(windows))
    if lit[-1]:
        group[rng.random(len(windows)) < style.lit_window_prob] = n_colours
    return Building(
        side=side,
        s0=s0,
        s1=s1,
        u=u,
        depth=float(rng.uniform(8, 20)),
        height=height,
        colour=jitter(rng, pick(rng, style.building_colours)),
        shop_colour=jitter(rng, pick(rng, ((60, 55, 50), (120, 100, 80), (40, 45, 55), (150, 140, 130)))),
        windows=windows,
        window_group=group,
        window_colours=colours,
        window_lit=lit,
    )


def _boundary(rng, style: CityStyle, kind: str, side: int, s0: float, s1: float, u: float) -> Boundary:
    if kind == "wall":
        return Boundary(kind, side, s0, s1, u, float(rng.uniform(1.0, 2.8)), jitter(rng, pick(rng, style.wall_colours)))
    if kind == "fence":
        return Boundary(
            kind, side, s0, s1, u, float(rng.uniform(1.0, 2.0)), jitter(rng, pick(rng, style.fence_colours))
        )
    bumps = rng.uniform(-0.15, 0.15, int(s1 - s0) + 2)
    return Boundary(
        kind,
        side,
        s0,
        s1,
        u,
        float(rng.uniform(0.8, 1.6)),
        jitter(rng, pick(rng, style.vegetation_colours)),
        bumps=bumps,
    )


def _tree(rng, style: CityStyle, s: float, u: float) -> Tree:
    radius = float(rng.uniform(1.2, 2.8))
    base = pick(rng, style.vegetation_colours)
    crown = []
    for _ in range(int(rng.integers(4, 8))):
        r = radius * float(rng.uniform(0.45, 0.75))
        crown.append(
            (
                float(rng.normal(0, radius * 0.35)),
                float(rng.normal(0, radius * 0.3)),
                r,
                r * float(rng.uniform(0.8, 1.1)),
                jitter(rng, base, 25),
            )
        )
    return Tree(
        s=s,
        u=u,
        trunk_height=float(rng.uniform(1.8, 3.5)),
        trunk_width=float(rng.uniform(0.2, 0.4)),
        trunk_colour=jitter(rng, (90, 70, 55), 12),
        crown=crown,
    )


def _sign_pole(rng, s: float, side: int, u: float) -> Pole:
    shape = pick(rng, ("circle", "triangle", "square", "rect"))
    face, rim = {
        "circle": ((240, 240, 240), (200, 30, 30)),
        "triangle": ((245, 245, 240), (210, 30, 30)),
        "square": ((30, 80, 170), (240, 240, 240)),
        "rect": (pick(rng, ((30, 110, 60), (30, 80, 170), (240, 240, 235))), (240, 240, 240)),
    }[shape]
    attachments = [
        (
            "sign",
            float(rng.uniform(2.0, 2.6)),
            0.0,
            shape,
            jitter(rng, face, 10),
            jitter(rng, rim, 10),
            float(rng.uniform(0.5, 0.8)),
        )
    ]
    if rng.random() < 0.3:  # a second sign below the first
        attachments.append(
            (
                "sign",
                attachments[0][1] - 0.8,
                0.0,
                "rect",
                jitter(rng, (240, 240, 235), 10),
                jitter(rng, (30, 30, 30), 10),
                0.45,
            )
        )
    return Pole(
        s=s,
        side=side,
        u=u,
        height=attachments[0][1] + 0.4,
        colour=jitter(rng, (130, 130, 135)),
        attachments=attachments,
    )


def _light_pole(rng, s: float, side: int, u: float, overhead: bool, reach: float) -> Pole:
    housing = jitter(rng, pick(rng, ((30, 30, 30), (200, 170, 40), (60, 60, 65))), 8)
    active = int(rng.integers(3))
    attachments = [("light", 2.6, 0.0, housing, active)]
    arm = 0.0
    if overhead:
        arm = max(reach * float(rng.uniform(0.5, 0.9)), 2.0)
        attachments.append(("light", 4.8, -side * arm, housing, active))
    if rng.random() < 0.5:
        attachments.append(
            ("sign", 2.0, 0.0, "rect", jitter(rng, (240, 240, 235), 10), jitter(rng, (30, 80, 170)), 0.4)
        )
    return Pole(
        s=s,
        side=side,
        u=u,
        height=5.6 if overhead else 3.6,
        colour=jitter(rng, (80, 85, 90)),
        attachments=attachments,
        arm=arm,
    )


def _vehicle(
    rng,
    style: CityStyle,
    s: float,
    u: float,
    speed: float,
    facing: int,
    kind: str | None = None,
    length: float | None = None,
) -> Vehicle:
    if kind is None:
        r = rng.random()
        kind = "truck" if r < style.truck_prob else ("bus" if r < style.truck_prob + style.bus_prob else "car")
    glass = jitter(rng, (35, 45, 55), 15)
    if kind == "car":
        return Vehicle(
            kind,
            s,
            u,
            speed,
            length or float(rng.uniform(3.9, 4.9)),
            float(rng.uniform(1.65, 1.9)),
            float(rng.uniform(1.4, 1.7)),
            float(rng.uniform(0.85, 1.0)),
            jitter(rng, pick(rng, style.car_colours), 12),
            glass,
            facing,
        )
    if kind == "truck":
        return Vehicle(
            kind,
            s,
            u,
            speed,
            float(rng.uniform(6.5, 10.0)),
            2.45,
            float(rng.uniform(3.0, 3.8)),
            float(rng.uniform(2.6, 3.2)),
            jitter(rng, pick(rng, ((235, 235, 235), (200, 60, 40), (60, 90, 150), (210, 200, 180))), 15),
            glass,
            facing,
        )
    if kind == "bus":
        return Vehicle(
            kind,
            s,
            u,
            speed,
            float(rng.uniform(11.0, 13.0)),
            2.55,
            3.1,
            1.1,
            jitter(rng, pick(rng, style.bus_colours), 12),
            glass,
            facing,
        )
    return Vehicle(
        "train",
        s,
        u,
        speed,
        float(rng.uniform(25.0, 36.0)),
        2.6,
        3.5,
        1.0,
        jitter(rng, pick(rng, style.train_colours), 12),
        glass,
        facing,
    )


def _two_wheeler(rng, kind: str, s: float, u: float, speed: float, view: str, rider: Person | None) -> TwoWheeler:
    colours = (
        ((30, 30, 30), (180, 30, 30), (40, 60, 140), (200, 200, 200), (60, 110, 60))
        if kind == "bicycle"
        else ((20, 20, 20), (200, 40, 30), (230, 230, 230), (40, 40, 120), (240, 170, 20))
    )
    return TwoWheeler(
        kind=kind,
        s=s,
        u=u,
        speed=speed,
        view=view,
        facing=int(rng.choice([-1, 1])),
        colour=jitter(rng, pick(rng, colours)),
        rider=rider,
    )
