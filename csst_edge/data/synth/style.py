"""The two synthetic 'cities' (domains): what differs between them, as plain numbers.

City A is a sunny, dense old town: narrow two-lane streets with parking lanes, tall warm-coloured facades, few
trees. City B is a foggy suburb at dusk or under overcast sky: wide multi-lane roads with medians and verges,
low grey/blue buildings set back behind lawns, many (autumn-coloured) trees, lit windows and car lights.
The gap is clear in palette, lighting and layout statistics, and small in geometry and class definitions, so a
model trained on A transfers to B only partly: the situation CSST's pseudo labels address. (A first version made
B much darker and foggier; a teacher trained on a few A frames then scored ~3 % mIoU on B, and pseudo labels that
bad teach a student nothing, so the gap was narrowed to one a few-shot teacher can partly bridge.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from csst_edge.errors import ConfigError

Colour = tuple[float, float, float]


@dataclass(frozen=True)
class CityStyle:
    name: str
    # camera and road geometry (metres)
    horizon: tuple[float, float]  # horizon row as a fraction of the image height (min, max)
    camera_height: tuple[float, float]
    lanes_per_direction: tuple[int, ...]
    lane_width: tuple[float, float]
    parking_lane_prob: float
    median_prob: float
    median_width: tuple[float, float]
    sidewalk_width: tuple[float, float]
    verge_width: tuple[float, float]  # grass strip between sidewalk and building line
    setback: tuple[float, float]  # building line behind the verge
    outer_ground: int  # class of the ground behind the verge: sidewalk (plaza) or terrain (lawn)
    curve: float  # max road curvature coefficient (1/m)
    cross_street_every: tuple[float, float]  # metres between intersections
    # buildings
    building_gap_prob: float
    building_length: tuple[float, float]
    building_height: tuple[float, float]
    floor_height: tuple[float, float]
    building_colours: tuple[Colour, ...]
    window_colours: tuple[Colour, ...]
    lit_window_prob: float
    # boundaries between sidewalk and the lots behind it, per gap: wall, fence, hedge, nothing
    boundary_probs: tuple[float, float, float, float]
    wall_colours: tuple[Colour, ...]
    fence_colours: tuple[Colour, ...]
    # vegetation and terrain
    tree_spacing: tuple[float, float]
    tree_prob: float
    lawn_tree_rate: float  # extra trees per metre on the lawns (B)
    vegetation_colours: tuple[Colour, ...]
    terrain_colours: tuple[Colour, ...]
    # ground
    road_colour: Colour
    sidewalk_colour: Colour
    centre_line_colour: Colour
    puddle_prob: float
    # traffic and people (rates per metre of street unless said otherwise)
    car_gap: tuple[float, float]
    truck_prob: float
    bus_prob: float
    train_rate: float
    parked_car_prob: float
    person_rate: float
    rider_rate: float
    parked_bicycle_rate: float
    parked_motorcycle_rate: float
    car_colours: tuple[Colour, ...]
    bus_colours: tuple[Colour, ...]
    train_colours: tuple[Colour, ...]
    clothes_colours: tuple[Colour, ...]
    # light and weather
    sky_kinds: tuple[tuple[str, float], ...]  # (kind, probability): clear, overcast, dusk
    gain: tuple[float, float]
    tint: Colour
    fog_distance: tuple[float, float]  # metres at which fog reaches 63 %
    fog_colour: Colour
    sensor_noise: tuple[float, float]
    sun_shadow_prob: float
    lights_on: bool  # headlights, tail lights and lit windows glow


_SHARED_CARS = (
    (200, 200, 205),
    (30, 30, 35),
    (120, 122, 128),
    (160, 30, 35),
    (40, 60, 120),
    (235, 235, 235),
    (90, 95, 90),
    (180, 160, 120),
    (20, 70, 60),
    (200, 120, 40),
)
_SHARED_CLOTHES = (
    (30, 30, 40),
    (200, 200, 200),
    (90, 60, 40),
    (40, 70, 130),
    (150, 30, 40),
    (60, 100, 60),
    (220, 190, 140),
    (110, 110, 115),
    (20, 20, 20),
    (170, 120, 160),
)

CITY_A = CityStyle(
    name="A",
    horizon=(0.44, 0.50),
    camera_height=(1.3, 1.5),
    lanes_per_direction=(1, 1, 2),
    lane_width=(3.0, 3.4),
    parking_lane_prob=0.7,
    median_prob=0.0,
    median_width=(0.0, 0.0),
    sidewalk_width=(2.5, 4.0),
    verge_width=(0.0, 1.2),
    setback=(0.0, 0.5),
    outer_ground=1,
    curve=0.0015,
    cross_street_every=(50.0, 110.0),
    building_gap_prob=0.2,
    building_length=(8.0, 26.0),
    building_height=(6.0, 14.0),
    floor_height=(3.0, 3.6),
    building_colours=(
        (196, 170, 130),
        (170, 95, 70),
        (210, 190, 150),
        (185, 140, 90),
        (150, 120, 100),
        (225, 205, 175),
        (140, 80, 60),
        (200, 160, 110),
        (120, 120, 115),
    ),
    window_colours=((40, 50, 60), (70, 90, 110), (25, 30, 35), (110, 130, 150)),
    lit_window_prob=0.0,
    boundary_probs=(0.45, 0.25, 0.1, 0.2),
    wall_colours=((170, 150, 125), (150, 80, 60), (140, 140, 135), (200, 185, 160)),
    fence_colours=((40, 45, 40), (60, 60, 65), (110, 80, 50)),
    tree_spacing=(10.0, 22.0),
    tree_prob=0.35,
    lawn_tree_rate=0.0,
    vegetation_colours=((70, 120, 40), (90, 140, 50), (50, 95, 35), (110, 150, 60)),
    terrain_colours=((130, 150, 70), (150, 140, 90), (110, 130, 60)),
    road_colour=(115, 112, 110),
    sidewalk_colour=(175, 160, 150),
    centre_line_colour=(235, 235, 225),
    puddle_prob=0.0,
    car_gap=(7.0, 28.0),
    truck_prob=0.05,
    bus_prob=0.06,
    train_rate=0.0006,
    parked_car_prob=0.5,
    person_rate=0.12,
    rider_rate=0.0028,
    parked_bicycle_rate=0.004,
    parked_motorcycle_rate=0.0015,
    car_colours=_SHARED_CARS,
    bus_colours=((230, 190, 40), (190, 40, 40), (230, 230, 225)),
    train_colours=((200, 40, 40), (235, 235, 230), (240, 200, 40)),
    clothes_colours=_SHARED_CLOTHES,
    sky_kinds=(("clear", 0.8), ("overcast", 0.2)),
    gain=(0.95, 1.1),
    tint=(1.05, 1.0, 0.92),
    fog_distance=(500.0, 900.0),
    fog_colour=(200, 210, 225),
    sensor_noise=(2.0, 4.0),
    sun_shadow_prob=0.7,
    lights_on=False,
)

CITY_B = CityStyle(
    name="B",
    horizon=(0.44, 0.50),
    camera_height=(1.5, 1.8),
    lanes_per_direction=(2, 2, 3),
    lane_width=(3.4, 3.8),
    parking_lane_prob=0.15,
    median_prob=0.5,
    median_width=(2.0, 4.0),
    sidewalk_width=(1.8, 2.6),
    verge_width=(1.5, 4.0),
    setback=(3.0, 9.0),
    outer_ground=9,
    curve=0.0025,
    cross_street_every=(80.0, 160.0),
    building_gap_prob=0.45,
    building_length=(10.0, 30.0),
    building_height=(6.0, 15.0),
    floor_height=(2.8, 3.2),
    building_colours=(
        (150, 160, 175),
        (200, 200, 205),
        (90, 95, 110),
        (120, 75, 70),
        (175, 180, 170),
        (110, 125, 140),
        (225, 225, 220),
        (70, 70, 80),
    ),
    window_colours=((30, 35, 50), (60, 70, 95), (20, 22, 30)),
    lit_window_prob=0.3,
    boundary_probs=(0.1, 0.35, 0.4, 0.15),
    wall_colours=((120, 120, 125), (90, 90, 100), (160, 150, 140)),
    fence_colours=((150, 150, 155), (70, 90, 70), (200, 200, 200)),
    tree_spacing=(6.0, 12.0),
    tree_prob=0.8,
    lawn_tree_rate=0.06,
    vegetation_colours=((100, 110, 40), (150, 110, 30), (60, 80, 40), (170, 80, 30), (80, 100, 50)),
    terrain_colours=((90, 105, 55), (120, 115, 70), (75, 90, 50)),
    road_colour=(80, 82, 88),
    sidewalk_colour=(140, 140, 140),
    centre_line_colour=(230, 190, 40),
    puddle_prob=0.6,
    car_gap=(10.0, 40.0),
    truck_prob=0.12,
    bus_prob=0.04,
    train_rate=0.0005,
    parked_car_prob=0.3,
    person_rate=0.03,
    rider_rate=0.0022,
    parked_bicycle_rate=0.002,
    parked_motorcycle_rate=0.002,
    car_colours=_SHARED_CARS,
    bus_colours=((40, 80, 160), (230, 230, 225), (60, 140, 80)),
    train_colours=((40, 80, 160), (230, 230, 225), (60, 60, 60)),
    clothes_colours=_SHARED_CLOTHES,
    sky_kinds=(("dusk", 0.3), ("overcast", 0.5), ("clear", 0.2)),
    gain=(0.7, 0.95),
    tint=(0.95, 0.98, 1.06),
    fog_distance=(120.0, 300.0),
    fog_colour=(150, 155, 170),
    sensor_noise=(4.0, 7.0),
    sun_shadow_prob=0.0,
    lights_on=True,
)

CITY_STYLES = {"A": CITY_A, "B": CITY_B}


def city_style(city: str) -> CityStyle:
    try:
        return CITY_STYLES[str(city).upper().removeprefix("CITY")]
    except KeyError:
        raise ConfigError(f"unknown synthetic city {city!r}; available: {', '.join(CITY_STYLES)}") from None


@dataclass
class Look:
    """Per-frame (or per-video) appearance drawn from a city style: sky, light, fog, ground colours."""

    sky: str
    gain: float
    tint: np.ndarray
    fog_distance: float
    fog_colour: np.ndarray
    noise_sigma: float
    sun_side: int  # -1: shadows fall on the left side of the street, +1: right, 0: no sun
    road: np.ndarray
    sidewalk: np.ndarray
    terrain: np.ndarray
    marking: np.ndarray
    centre_line: np.ndarray
    kerb: np.ndarray
    puddles: bool
    sky_top: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    sky_horizon: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))


def jitter(rng: np.random.Generator, colour, amount: float = 18.0) -> np.ndarray:
    """A colour varied per instance: shared brightness change plus a little hue noise."""
    c = np.asarray(colour, np.float32) * rng.uniform(0.8, 1.15) + rng.normal(0, amount / 3, 3)
    return np.clip(c, 0, 255).astype(np.float32)


def pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def sample_look(rng: np.random.Generator, style: CityStyle) -> Look:
    kinds, probs = zip(*style.sky_kinds, strict=True)
    sky = kinds[int(rng.choice(len(kinds), p=np.asarray(probs) / sum(probs)))]
    gain = rng.uniform(*style.gain)
    fog = rng.uniform(*style.fog_distance)
    if sky == "clear":
        top, horizon = np.array([60, 110, 190]), np.array([170, 200, 230])
    elif sky == "overcast":
        g = rng.uniform(150, 210)
        top, horizon = np.array([g - 15, g - 10, g]), np.array([g + 15, g + 15, g + 18])
        fog *= 0.8
        gain *= 0.9
    else:  # dusk: warm band at the horizon under a dark blue sky
        top, horizon = np.array([40, 50, 90]), np.array([230, 150, 90])
    tint = np.asarray(style.tint, np.float32) * rng.uniform(0.96, 1.04, 3)
    return Look(
        sky=sky,
        gain=float(gain),
        tint=tint.astype(np.float32),
        fog_distance=float(fog),
        fog_colour=jitter(rng, style.fog_colour, 10) * (0.7 if sky == "dusk" else 1.0),
        noise_sigma=float(rng.uniform(*style.sensor_noise)),
        sun_side=int(rng.choice([-1, 1])) if sky == "clear" and rng.random() < style.sun_shadow_prob else 0,
        road=jitter(rng, style.road_colour, 12),
        sidewalk=jitter(rng, style.sidewalk_colour, 15),
        terrain=jitter(rng, pick(rng, style.terrain_colours), 15),
        marking=jitter(rng, (230, 230, 225), 8),
        centre_line=jitter(rng, style.centre_line_colour, 8),
        kerb=jitter(rng, (185, 185, 180), 10),
        puddles=bool(rng.random() < style.puddle_prob),
        sky_top=(top + rng.normal(0, 8, 3)).astype(np.float32),
        sky_horizon=(horizon + rng.normal(0, 8, 3)).astype(np.float32),
    )
