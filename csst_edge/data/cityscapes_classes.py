"""The 19 Cityscapes evaluation classes (train ids 0..18) and their official colours.

Shared by the synthetic scene generator, dataset YAMLs and reports, so every tool agrees on ids and palette.
Palette values are the ones in cityscapesScripts' `labels.py` (RGB).
"""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)

NUM_CLASSES = len(CLASS_NAMES)
IGNORE_INDEX = 255

# Train ids by name, as module constants, so generator code reads `CAR` rather than a bare 13.
(
    ROAD,
    SIDEWALK,
    BUILDING,
    WALL,
    FENCE,
    POLE,
    TRAFFIC_LIGHT,
    TRAFFIC_SIGN,
    VEGETATION,
    TERRAIN,
    SKY,
    PERSON,
    RIDER,
    CAR,
    TRUCK,
    BUS,
    TRAIN,
    MOTORCYCLE,
    BICYCLE,
) = range(NUM_CLASSES)

CLASS_ID: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}

assert len(PALETTE) == NUM_CLASSES
