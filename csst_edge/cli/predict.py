"""`csst-edge predict`: a checkpoint, ONNX model or TensorRT engine on images, a folder, a list, a video or a camera."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csst_edge.cli.common import console, err_console
from csst_edge.cli.eval import parse_scales
from csst_edge.sizes import parse_hw


def predict_command(
    model: Annotated[
        Path,
        typer.Argument(help="Checkpoint (.pt), ONNX model (.onnx, from `export onnx`) or TensorRT engine (.engine)."),
    ],
    source: Annotated[
        str,
        typer.Option(
            "--source",
            "-s",
            help="Image, image folder (recursive), list file (.txt, one path per line), video file, camera index "
            "(0), /dev/videoN, rtsp:// URL or GStreamer pipeline; images, folders and lists may be URLs (s3://).",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output folder: labels/, color/, overlay/ and predict.json (the summary)."),
    ] = Path("predictions"),
    save: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated: labels (class-id PNGs), color (palette PNGs), overlay (blended JPEGs; one video "
            "for a video or camera). Default: labels,overlay for images, overlay for a video or camera."
        ),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(
            help="Model input HEIGHTxWIDTH (default: the frame's size for a checkpoint, the export size for an "
            "exported model)."
        ),
    ] = None,
    fit: Annotated[
        str, typer.Option(help="resize (stretch to the model size) or letterbox (keep the aspect ratio, pad).")
    ] = "resize",
    backend: Annotated[
        str | None,
        typer.Option(
            help="torch (checkpoint), ort-trt / ort-cuda / ort-cpu (ONNX; comma-separated: tried in this order) or "
            "trt (engine); the names of `runtime run` and `bench` (default: the fastest available)."
        ),
    ] = None,
    device: Annotated[
        str,
        typer.Option(help="auto, cpu, cuda, cuda:1 ... (for an exported model cpu / cuda mean ort-cpu / ort-cuda)."),
    ] = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads (PyTorch or ONNX Runtime).")] = None,
    scales: Annotated[
        str, typer.Option(help="Checkpoint only: average over these scales (multi-scale test-time augmentation).")
    ] = "1.0",
    flip: Annotated[
        bool, typer.Option("--flip", help="Checkpoint only: also average with the horizontally flipped prediction.")
    ] = False,
    alpha: Annotated[float, typer.Option(help="Overlay opacity (0..1).")] = 0.5,
    video_fps: Annotated[
        float | None, typer.Option(help="Frame rate of the overlay video (default: the source's, else 15).")
    ] = None,
    max_frames: Annotated[int | None, typer.Option(help="Stop after this many frames.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Predict with a trained model and write label maps and colour overlays; Ctrl-C stops a camera cleanly.

    Examples:

      csst-edge predict runs/student/best.pt -s street.jpg                 # predictions/labels/street.png, overlay/

      csst-edge predict student.onnx -s drive.mp4 -o out --save overlay,labels   # out/overlay/drive.mp4 + PNGs

      csst-edge predict best.pt -s frames/ --save color --device cuda --scales 0.75,1.0,1.25 --flip

      csst-edge predict student.engine -s 0 --max-frames 300              # a camera, on TensorRT
    """
    from rich.markup import escape

    from csst_edge.export.predict import PredictSettings, predict
    from csst_edge.progress import progress_bar

    settings = PredictSettings(
        save=tuple(save.split(",")) if save is not None else None,
        size=parse_hw(size, "--size", minimum=8) if size else None,
        fit=fit,
        backend=backend,
        device=device,
        threads=threads,
        scales=parse_scales(scales),
        flip=flip,
        alpha=alpha,
        video_fps=video_fps,
        max_frames=max_frames,
    )
    bar = None if quiet else progress_bar("frame", console=console, transient=True)
    task = None

    def on_start(total: int | None) -> None:
        nonlocal task
        if bar is not None:
            bar.start()
            task = bar.add_task("predict", total=total)

    def on_frame(name: str) -> None:
        if bar is not None and task is not None:
            bar.update(task, advance=1)

    try:
        summary = predict(model, source, out, settings, on_start=on_start, on_frame=on_frame)
    finally:
        if bar is not None:
            bar.stop()
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
        err_console.print(
            f"[yellow]skipped {len(summary.failed)} unreadable input(s)[/]: {escape(summary.failed[0])}"
            + (f" (and {len(summary.failed) - 1} more, in predict.json)" if len(summary.failed) > 1 else ""),
            highlight=False,
        )
