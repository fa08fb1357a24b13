"""`csst-edge data synth`: synthetic two-city street scenes (labelled datasets) and a dashcam video."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csst_edge.cli.common import QuietBars, console, deprecated, out_option, renamed

_HELP = {  # help texts too long to stand on their option's line, by parameter name
    "out": "Output folder: city<X>/, city<X>.yaml, the video and its labels.",
}

# the old spellings, hidden: each still works, with a deprecation line
OldHeight = Annotated[int | None, typer.Option("--height", hidden=True, help="Deprecated: --size HxW.")]
OldWidth = Annotated[int | None, typer.Option("--width", hidden=True, help="Deprecated: --size HxW.")]
OldFps = Annotated[float | None, typer.Option("--fps", min=1.0, hidden=True, help="Deprecated: --video-fps.")]


def synth_command(
    out: Annotated[Path, out_option(_HELP["out"])] = Path("data/synth"),
    cities: Annotated[str, typer.Option(help="Comma-separated cities (domains) to generate: A, B.")] = "A,B",
    train: Annotated[int, typer.Option(min=0, help="Frames in each city's train split.")] = 200,
    val: Annotated[int, typer.Option(min=0, help="Frames in each city's val split.")] = 50,
    size: Annotated[str, typer.Option(help="Frame HEIGHTxWIDTH in pixels (at least 16x16).")] = "256x512",
    video_frames: Annotated[int, typer.Option(min=0, help="Frames of the dashcam video (0: no video).")] = 300,
    video_city: Annotated[str, typer.Option(help="City the dashcam video drives through.")] = "B",
    video_fps: Annotated[float, typer.Option(min=1.0, help="Frame rate of the dashcam video.")] = 15.0,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same files.")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Processes rendering dataset frames in parallel.")] = 2,
    quiet: QuietBars = False,
    old_height: OldHeight = None,
    old_width: OldWidth = None,
    old_fps: OldFps = None,
) -> None:
    """Generate synthetic street scenes with the 19 Cityscapes classes in two cities, plus a dashcam video.

    City A is sunny and dense, city B foggy/dusky, green and wide: train on A, self-train on B. Each city gets a
    dataset YAML usable anywhere a dataset is expected (`--data data/synth/cityA.yaml`, or the built-ins
    `synth_cityA` / `synth_cityB`, which read CSST_SYNTH_ROOT, default data/synth). Reruns only render missing
    frames.

    Examples:

      csst-edge data synth                                   # 2 x (200 train + 50 val) frames + a 300-frame video

      csst-edge data synth --out /tmp/synth --train 20 --val 5 --video-frames 0 --size 128x256

      csst-edge data synth --video-frames 600 --video-fps 30     # a 20 s drive

      csst-edge train --data data/synth/cityA.yaml --val data/synth/cityB.yaml --model fastscnn
    """
    from csst_edge.data.synth import write_dataset
    from csst_edge.data.synth.style import city_style

    height, width = _frame_size(size, old_height, old_width)
    fps = renamed(video_fps, old_fps, "--video-fps", "--fps", default=15.0)
    names = [city_style(c).name for c in _city_names(cities)]
    # what the dataset and the video writer share: frame size, seed and reporting
    shared = {"height": height, "width": width, "seed": seed, "progress": not quiet, "console": console}
    yamls = write_dataset(out, cities=names, train=train, val=val, workers=workers, **shared)
    video = None
    if video_frames > 0:
        video = out / f"city{city_style(video_city).name}_drive.mp4"
        _write_video(video, video_city, video_frames, fps, shared)
    _print_tables(yamls, f"{train} train + {val} val", video, video_city, video_frames)


def _frame_size(size: str, old_height: int | None, old_width: int | None) -> tuple[int, int]:
    """--size HxW, or the deprecated --height / --width (each one replaces its side)."""
    from csst_edge.errors import ConfigError
    from csst_edge.sizes import parse_hw

    height, width = parse_hw(size, "--size", minimum=16)
    for old, value in (("--height", old_height), ("--width", old_width)):
        if value is not None:
            deprecated(old, "--size HxW")
            if value < 16:
                raise ConfigError(f"{old}: frames must be at least 16 pixels, got {value}")
    return old_height or height, old_width or width


def _city_names(cities: str) -> list[str]:
    from csst_edge.errors import ConfigError

    names = [c.strip() for c in cities.split(",") if c.strip()]
    if not names:
        raise ConfigError("--cities is empty; give e.g. A,B")
    return names


def _write_video(video: Path, city: str, frames: int, fps: float, shared: dict) -> None:
    """The dashcam drive and its label PNGs (in <video stem>_labels/), unless a complete one is there."""
    from csst_edge.data.synth import write_video
    from csst_edge.data.synth.style import city_style

    labels = _video_labels(video)
    if _video_done(video, labels, frames):
        console.print(f"video {video} already complete; skipped")
        return
    write_video(video, city=city_style(city).name, frames=frames, fps=fps, labels_dir=labels, **shared)


def _video_labels(video: Path) -> Path:
    return video.with_name(f"{video.stem}_labels")


def _print_tables(yamls: dict, splits: str, video: Path | None, video_city: str, video_frames: int) -> None:
    """What was written (datasets, video, labels), then each city's class pixel shares."""
    from rich.table import Table

    from csst_edge.data.synth import class_pixel_shares
    from csst_edge.data.synth.style import city_style

    files = Table(title="files", show_edge=False)
    for col in ("what", "path", "frames"):
        files.add_column(col)
    shares = {}
    for city, yaml_path in yamls.items():
        labels = sorted((yaml_path.parent / f"city{city}" / "labels").rglob("*.png"))
        files.add_row(f"city {city} dataset", str(yaml_path), splits)
        shares[city] = class_pixel_shares(labels)
    if video is not None:
        files.add_row(f"dashcam video (city {city_style(video_city).name})", str(video), str(video_frames))
        files.add_row("video labels", str(_video_labels(video)), str(video_frames))
    console.print(files)
    console.print(_shares_table(shares))


def _shares_table(shares: dict):
    from rich.table import Table

    from csst_edge.data.cityscapes_classes import CLASS_NAMES

    table = Table(title="class pixel share (%)", show_edge=False)
    table.add_column("class")
    for city in shares:
        table.add_column(f"city {city}", justify="right")
    for i, name in enumerate(CLASS_NAMES):
        table.add_row(name, *(f"{100 * s[i]:.2f}" for s in shares.values()))
    return table


def _video_done(video: Path, labels: Path, frames: int) -> bool:
    """A finished video is renamed into place only after it read back completely, so existence plus the label
    count is enough to skip it."""
    if not video.is_file() or not labels.is_dir():
        return False
    import cv2

    cap = cv2.VideoCapture(str(video))
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    return count == frames and len(list(labels.glob("frame_*.png"))) == frames
