"""`csst-edge predict`: a checkpoint, ONNX model or TensorRT engine on images, a folder, a list, a video or a camera."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csst_edge.cli.common import Fit, MaxFrames, Quiet, console, err_console, out_option, settings_from
from csst_edge.cli.eval import parse_scales
from csst_edge.sizes import parse_hw

_HELP = {  # help texts too long to stand on their option's line, by parameter name
    "model": "Checkpoint (.pt), ONNX model (.onnx, from `export onnx`) or TensorRT engine (.engine).",
    "source": "Image, image folder (recursive), list file (.txt, one path per line), video file, camera index "
    "(0), /dev/videoN, rtsp:// URL or GStreamer pipeline; images, folders and lists may be URLs (s3://).",
    "out": "Output folder: labels/, color/, overlay/ and predict.json (the summary).",
    "save": "Comma-separated: labels (class-id PNGs), color (palette PNGs), overlay (blended JPEGs; one video "
    "for a video or camera). Default: labels,overlay for images, overlay for a video or camera.",
    "size": "Model input HEIGHTxWIDTH (default: the frame's size for a checkpoint, the export size for an "
    "exported model).",
    "backend": "torch (checkpoint), ort-trt / ort-cuda / ort-cpu (ONNX; comma-separated: tried in this order) or "
    "trt (engine); the names of `runtime run` and `bench` (default: the fastest available).",
    "device": "auto, cpu, cuda, cuda:1 ... (for an exported model cpu / cuda mean ort-cpu / ort-cuda).",
    "scales": "Checkpoint only: average over these scales (multi-scale test-time augmentation).",
    "flip": "Checkpoint only: also average with the horizontally flipped prediction.",
    "video_fps": "Frame rate of the overlay video (default: the source's, else 15).",
}


def predict_command(
    model: Annotated[Path, typer.Argument(help=_HELP["model"])],
    source: Annotated[str, typer.Option("--source", "-s", help=_HELP["source"])],
    out: Annotated[Path, out_option(_HELP["out"])] = Path("predictions"),
    save: Annotated[str | None, typer.Option(help=_HELP["save"])] = None,
    size: Annotated[str | None, typer.Option(help=_HELP["size"])] = None,
    fit: Fit = "resize",
    backend: Annotated[str | None, typer.Option(help=_HELP["backend"])] = None,
    device: Annotated[str, typer.Option(help=_HELP["device"])] = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads (PyTorch or ONNX Runtime).")] = None,
    scales: Annotated[str, typer.Option(help=_HELP["scales"])] = "1.0",
    flip: Annotated[bool, typer.Option("--flip", help=_HELP["flip"])] = False,
    alpha: Annotated[float, typer.Option(help="Overlay opacity (0..1).")] = 0.5,
    video_fps: Annotated[float | None, typer.Option(help=_HELP["video_fps"])] = None,
    max_frames: MaxFrames = None,
    quiet: Quiet = False,
) -> None:
    """Predict with a trained model and write label maps and colour overlays; Ctrl-C stops a camera cleanly.

    Examples:

      csst-edge predict runs/student/best.pt -s street.jpg                 # predictions/labels/street.png, overlay/

      csst-edge predict student.onnx -s drive.mp4 -o out --save overlay,labels   # out/overlay/drive.mp4 + PNGs

      csst-edge predict best.pt -s frames/ --save color --device cuda --scales 0.75,1.0,1.25 --flip

      csst-edge predict student.engine -s 0 --max-frames 300              # a camera, on TensorRT
    """
    from csst_edge.export.predict import PredictSettings, predict

    settings = settings_from(
        PredictSettings,
        locals(),
        save=tuple(save.split(",")) if save is not None else None,
        size=parse_hw(size, "--size", minimum=8) if size else None,
        scales=parse_scales(scales),
    )
    progress = _FrameProgress(quiet)
    try:
        summary = predict(model, source, out, settings, on_start=progress.on_start, on_frame=progress.on_frame)
    finally:
        progress.stop()
    _print_summary(summary)


class _FrameProgress:
    """A transient progress bar over the frames (total unknown for a camera); with -q it does nothing."""

    def __init__(self, quiet: bool):
        from csst_edge.progress import progress_bar

        self.bar = None if quiet else progress_bar("frame", console=console, transient=True)
        self.task = None

    def on_start(self, total: int | None) -> None:
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task("predict", total=total)

    def on_frame(self, name: str) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, advance=1)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _print_summary(summary) -> None:
    from rich.markup import escape

    wrote = ", ".join(f"{n} {kind}" for kind, n in summary.written.items())
    if summary.overlay_video:
        wrote = ", ".join(filter(None, [wrote, f"overlay video {summary.overlay_video}"]))
    console.print(
        f"[green]done[/]: {summary.frames} frames in {summary.seconds:.1f}s, {summary.fps:.1f} FPS "
        + escape(f"(inference {summary.infer_ms_mean:.1f} ms on {summary.backend}); wrote {wrote or 'nothing'} ")
        + escape(f"in {summary.out}"),
        highlight=False,
    )
    top = [(k, v) for k, v in sorted(summary.class_shares.items(), key=lambda kv: -kv[1]) if v >= 0.005][:8]
    if top:
        console.print(escape("class shares: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in top)), highlight=False)
    if summary.failed:
        _print_failed(summary.failed)


def _print_failed(failed: list[str]) -> None:
    from rich.markup import escape

    more = f" (and {len(failed) - 1} more, in predict.json)" if len(failed) > 1 else ""
    err_console.print(
        f"[yellow]skipped {len(failed)} unreadable input(s)[/]: {escape(failed[0])}" + more, highlight=False
    )
