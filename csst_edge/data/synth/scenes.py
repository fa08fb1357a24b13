"""Frames, datasets and the dashcam video of the synthetic cities: what `csst_edge.data.synth` exports.

Every frame is a pure function of (seed, city, split, index), so datasets are identical whatever the number of
worker processes, and a rerun only renders the frames that are missing. Dataset images are written as JPEG
(quality 95): the sensor noise makes PNGs ~4x larger for no benefit to training; labels are lossless PNG.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import yaml

from csst_edge.data.cityscapes_classes import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, PALETTE
from csst_edge.data.synth.render import FAR, NoiseFields, render_frame
from csst_edge.data.synth.style import city_style, sample_look
from csst_edge.data.synth.world import generate_world
from csst_edge.errors import ConfigError
from csst_edge.fileio import atomic_write_image, atomic_write_json, atomic_write_text

GENERATOR_VERSION = 2  # bump when the renderer changes, so old cached frames are not silently mixed with new ones
IMAGE_EXT = ".jpg"
JPEG_QUALITY = 95
SPLITS = ("train", "val")


def frame_rng(seed: int, city: str, split: str, index: int) -> np.random.Generator:
    """The generator of one dataset frame: independent of every other frame (and of worker scheduling)."""
    return np.random.default_rng([int(seed), zlib.crc32(city.encode()), zlib.crc32(split.encode()), int(index)])


def render_scene(
    rng_or_seed: np.random.Generator | int, city: str = "A", height: int = 256, width: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """One still street scene of `city` ('A' or 'B'): (RGB uint8 HxWx3, train-id labels uint8 HxW in 0..18)."""
    rng = rng_or_seed if isinstance(rng_or_seed, np.random.Generator) else np.random.default_rng(int(rng_or_seed))
    if height < 16 or width < 16:
        raise ConfigError(f"synthetic frames need at least 16x16 pixels, got {width}x{height}")
    style = city_style(city)
    look = sample_look(rng, style)
    world = generate_world(rng, style, far=FAR)
    fields = NoiseFields.sample(rng, height, width)
    return render_frame(world, look, width, height, 0.0, fields, rng, style.lights_on)


# ----------------------------------------------------------------------------------------------------------------
# datasets


def dataset_yaml(city: str, generator: dict | None = None) -> str:
    """The folder-layout dataset YAML of one city, with its root relative to the YAML's folder."""
    city = city_style(city).name
    cfg = {
        "name": f"synth_city{city}",
        "root": f"city{city}",
        "layout": "folder",
        "splits": {s: s for s in SPLITS},
        "classes": list(CLASS_NAMES),
        "palette": [list(c) for c in PALETTE],
        "ignore_index": IGNORE_INDEX,
    }
    header = f"# Synthetic street scenes, city {city} (csst_edge.data.synth).\n"
    if generator:
        header += "# generated with " + ", ".join(f"{k}={v}" for k, v in generator.items()) + "\n"
    body = yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, width=120)
    return header + body


def _frame_name(city: str, split: str, index: int) -> str:
    return f"city{city}_{split}_{index:05d}"


def _write_frame(task: tuple) -> tuple[str, bool]:
    """Render and write one frame unless it is already there. Image first, label last: the label's presence
    marks a finished frame, so a killed run leaves at most an orphan image, which the rerun overwrites."""
    root, city, split, index, seed, height, width = task
    name = _frame_name(city, split, index)
    image_path = Path(root) / "images" / split / f"{name}{IMAGE_EXT}"
    label_path = Path(root) / "labels" / split / f"{name}.png"
    if label_path.is_file() and image_path.is_file():
        return name, False
    image, label = render_scene(frame_rng(seed, city, split, index), city, height, width)
    atomic_write_image(image_path, image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    atomic_write_image(label_path, label)
    return name, True


def _init_worker() -> None:
    cv2.setNumThreads(1)  # the pool already uses every core it was given


def _prune_surplus(root: Path, city: str, split: str, count: int) -> None:
    """Remove this generator's frames with index >= count (a rerun asked for fewer), so a split has exactly
    `count` frames. Only names this module writes are touched."""
    pattern = re.compile(rf"^city{city}_{split}_(\d{{5}})$")
    for sub, ext in (("labels", ".png"), ("images", IMAGE_EXT)):
        folder = root / sub / split
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            m = pattern.match(p.stem)
            if m and p.suffix == ext and int(m.group(1)) >= count:
                p.unlink()


def write_dataset(
    out: str | os.PathLike,
    cities=("A", "B"),
    train: int = 100,
    val: int = 20,
    height: int = 256,
    width: int = 512,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
    console=None,
    on_frame: Callable[[str, bool], None] | None = None,
) -> dict[str, Path]:
    """Write `out/city<X>/{images,labels}/{train,val}/` and `out/city<X>.yaml` per city; returns {city: yaml}.

    Reruns skip finished frames; a rerun with other generator settings (seed, size, generator version) in the
    same folder is refused rather than mixing frames. `workers` > 1 renders in a process pool; the files are
    identical to a single-process run. `on_frame(name, rendered)` is called after each frame (for callers that
    draw their own progress).
    """
    out = Path(out)
    counts = {"train": int(train), "val": int(val)}
    if any(n < 0 for n in counts.values()):
        raise ConfigError(f"frame counts must be >= 0, got train={train} val={val}")
    cities = [city_style(c).name for c in cities]
    generator = {"seed": int(seed), "height": int(height), "width": int(width), "version": GENERATOR_VERSION}
    tasks = []
    for city in cities:
        root = out / f"city{city}"
        stamp = root / "synth.json"
        if stamp.is_file():
            import json

            previous = json.loads(stamp.read_text())
            if previous != generator:
                raise ConfigError(
                    f"{root}: holds synthetic frames made with {previous}, not {generator}; "
                    f"choose another output folder or delete this one"
                )
        atomic_write_json(stamp, generator)
        for split, n in counts.items():
            _prune_surplus(root, city, split, n)
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            tasks += [(str(root), city, split, i, int(seed), int(height), int(width)) for i in range(n)]

    bar = None
    if progress and tasks:
        from csst_edge.progress import progress_bar

        bar = progress_bar("img", console=console)
        bar.start()
        job = bar.add_task(f"synthetic city {'+'.join(cities)}", total=len(tasks))
    try:
        if workers > 1 and len(tasks) > 1:
            # spawn, not fork: callers (the demo, training scripts) may already hold torch threads
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(min(workers, len(tasks)), initializer=_init_worker) as pool:
                for name, rendered in pool.imap_unordered(_write_frame, tasks, chunksize=4):
                    if bar is not None:
                        bar.advance(job)
                    if on_frame:
                        on_frame(name, rendered)
        else:
            for task in tasks:
                name, rendered = _write_frame(task)
                if bar is not None:
                    bar.advance(job)
                if on_frame:
                    on_frame(name, rendered)
    finally:
        if bar is not None:
            bar.stop()

    result = {}
    for city in cities:
        path = out / f"city{city}.yaml"
        atomic_write_text(path, dataset_yaml(city, {**generator, "train": counts["train"], "val": counts["val"]}))
        result[city] = path
    return result


def class_pixel_shares(label_paths) -> np.ndarray:
    """Fraction of pixels of each of the 19 classes over label PNGs (ignore excluded)."""
    counts = np.zeros(NUM_CLASSES, np.int64)
    for p in label_paths:
        label = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if label is None:
            continue
        counts += np.bincount(label.ravel(), minlength=256)[:NUM_CLASSES]
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


# ----------------------------------------------------------------------------------------------------------------
# dashcam video


def write_video(
    path: str | os.PathLike,
    city: str = "B",
    frames: int = 300,
    height: int = 256,
    width: int = 512,
    fps: float = 15,
    seed: int = 0,
    labels_dir: str | os.PathLike | None = None,
    speed: float | None = None,
    progress: bool = False,
    console=None,
) -> Path:
    """A dashcam drive through one persistent world of `city`, as .mp4 ('mp4v'); optionally the per-frame
    labels as `labels_dir/frame_00000.png`, ... (same order as the video's frames).

    The camera moves forward at `speed` m/s (default: 8-12 m/s drawn from the seed); other traffic, cyclists
    and pedestrians move at their own speeds; textures are anchored to the world, so consecutive frames differ
    only by motion and sensor noise. Written to a temporary file and renamed, so a killed run leaves no
    truncated video behind.
    """
    path = Path(path)
    if frames < 1:
        raise ConfigError(f"a video needs at least one frame, got frames={frames}")
    if path.suffix.lower() != ".mp4":
        raise ConfigError(f"{path}: the dashcam video is written as .mp4; use a .mp4 file name")
    style = city_style(city)
    rng = np.random.default_rng([int(seed), zlib.crc32(style.name.encode()), zlib.crc32(b"video")])
    look = sample_look(rng, style)
    v = float(speed) if speed is not None else float(rng.uniform(8.0, 12.0))
    duration = frames / float(fps)
    world = generate_world(rng, style, far=FAR, duration=duration, camera_speed=v)
    fields = NoiseFields.sample(rng, height, width)  # fixed for the whole drive: textures must not flicker
    sensor = np.random.default_rng([int(seed), zlib.crc32(style.name.encode()), zlib.crc32(b"sensor")])
    labels = Path(labels_dir) if labels_dir is not None else None
    if labels is not None:
        labels.mkdir(parents=True, exist_ok=True)
        for stale in labels.glob("frame_*.png"):  # from an earlier, longer video: frames must match the video
            if stale.stem[6:].isdigit() and int(stale.stem[6:]) >= frames:
                stale.unlink()

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise ConfigError(f"{path}: OpenCV cannot write mp4v video here (no encoder in this OpenCV build?)")
    bar = None
    if progress:
        from csst_edge.progress import progress_bar

        bar = progress_bar("frame", console=console)
        bar.start()
        job = bar.add_task(f"dashcam video, city {style.name}", total=frames)
    try:
        for i in range(frames):
            image, label = render_frame(world, look, width, height, i / float(fps), fields, sensor, style.lights_on)
            writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            if labels is not None:
                atomic_write_image(labels / f"frame_{i:05d}.png", label)
            if bar is not None:
                bar.advance(job)
        writer.release()
        _check_video(tmp, frames, path)
        os.replace(tmp, path)
    except BaseException:
        writer.release()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if bar is not None:
            bar.stop()
    return path


def _check_video(tmp: Path, frames: int, final: Path) -> None:
    cap = cv2.VideoCapture(str(tmp))
    try:
        n = 0
        while cap.isOpened():
            ok, _ = cap.read()
            if not ok:
                break
            n += 1
    finally:
        cap.release()
    if n != frames:
        raise ConfigError(f"{final}: wrote {frames} frames but OpenCV reads back {n}; the video encoder is broken")
