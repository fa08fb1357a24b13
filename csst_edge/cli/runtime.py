"""`csst-edge runtime run`: an exported model on a video / camera / RTSP / GStreamer source, with overlay, per-frame
log and frame harvesting. Torch-free, like everything it calls: this is the command the vehicle runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csst_edge.cli.common import command_group, console, deprecated, err_console, fail, renamed

app = command_group(
    "The edge runtime: run an exported model on a live or recorded source, and harvest frames for the next round."
)


@app.callback()
def runtime_group() -> None:
    """The edge runtime (torch-free): run an exported model on a source, log, overlay, harvest frames."""


@app.command("run")
def run_command(
    model: Annotated[
        Path, typer.Argument(help="Exported model: .onnx (metadata inside) or TensorRT .engine (+ .engine.json).")
    ],
    source: Annotated[
        str,
        typer.Option(
            "--source",
            "-s",
            help="Video file, image folder, camera index (0), /dev/videoN, rtsp:// or http(s):// URL, "
            "csi://0 (Jetson CSI), or a GStreamer pipeline ('... ! appsink').",
        ),
    ],
    backend: Annotated[
        str | None,
        typer.Option(
            help="ort-trt, ort-cuda, ort-cpu for an .onnx (comma-separated: tried in this order), trt for an .engine; "
            "the names `bench --backends` uses (default: the fastest available)."
        ),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime CPU threads.")] = None,
    spin: Annotated[
        bool,
        typer.Option(
            "--spin/--no-spin", help="Let ONNX Runtime's idle threads spin (faster only on an otherwise idle CPU)."
        ),
    ] = False,
    fit: Annotated[
        str, typer.Option(help="resize (stretch to the model size) or letterbox (keep the aspect ratio, pad).")
    ] = "resize",
    overlay: Annotated[
        Path | None, typer.Option("--overlay", help="Write the colour overlay as a video (.mp4 or .avi).")
    ] = None,
    show: Annotated[
        bool, typer.Option("--show", help="Show the overlay in a window (needs OpenCV with a GUI; q / Esc stops).")
    ] = False,
    alpha: Annotated[float, typer.Option(help="Overlay opacity.")] = 0.5,
    log: Annotated[
        Path | None, typer.Option(help="Per-frame JSONL log (timestamp, latency, class shares, harvest scores).")
    ] = None,
    harvest: Annotated[
        str | None,
        typer.Option(
            help="Harvest folder (or URL, mirrored when the run ends): keep the frames the next round learns most "
            "from (pseudo-label input)."
        ),
    ] = None,
    harvest_rate: Annotated[
        float,
        typer.Option(help="At most this many harvested frames per minute (best frame of each window; 0 = no limit)."),
    ] = 6.0,
    harvest_quota_mb: Annotated[
        float, typer.Option(help="Disk quota of the harvest; the lowest-scoring frames are evicted first.")
    ] = 2048.0,
    min_score: Annotated[float, typer.Option(help="Harvest only frames scoring at least this (0..1).")] = 0.25,
    min_sharpness: Annotated[
        float, typer.Option(help="Reject frames whose Laplacian variance (at 320 px width) is below this.")
    ] = 20.0,
    duplicate_similarity: Annotated[
        float, typer.Option(help="Skip frames at least this similar (cosine of thumbnails) to a recent harvested one.")
    ] = 0.95,
    uncertainty: Annotated[
        str,
        typer.Option(help="entropy (mean per-pixel entropy) or low-confidence (share of pixels below --confidence)."),
    ] = "entropy",
    confidence: Annotated[
        float, typer.Option(help="Top-probability threshold for --uncertainty low-confidence.")
    ] = 0.6,
    class_stats: Annotated[
        Path | None,
        typer.Option(
            help="Training-set class frequencies for the rarity score: a centroid index .npz "
            "(`csst-edge data index`) or a JSON list."
        ),
    ] = None,
    vehicle: Annotated[
        str | None, typer.Option(help="Vehicle id in harvested file names and the manifest (default: host name).")
    ] = None,
    live: Annotated[
        bool | None,
        typer.Option(
            "--live/--no-live",
            help="Override the source type: live sources drop frames when behind and reconnect on failure.",
        ),
    ] = None,
    queue_size: Annotated[int, typer.Option(help="Frames buffered between capture and inference.")] = 4,
    retries: Annotated[
        int | None,
        typer.Option(help="Give up on a live source after this many consecutive failed retries (default: never)."),
    ] = None,
    max_frames: Annotated[int | None, typer.Option(help="Stop after this many frames.")] = None,
    folder_fps: Annotated[
        float, typer.Option(help="Frame rate an image folder is treated as having (harvest rate limit).")
    ] = 10.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live status line.")] = False,
    old_output: Annotated[
        Path | None, typer.Option("--output", "-o", hidden=True, help="Deprecated: --overlay.")
    ] = None,
    old_providers: Annotated[
        str | None, typer.Option("--providers", hidden=True, help="Deprecated: --backend.")
    ] = None,
    old_max_retries: Annotated[
        int | None, typer.Option("--max-retries", hidden=True, help="Deprecated: --retries.")
    ] = None,
) -> None:
    """Run MODEL on a source; Ctrl-C or SIGTERM stops cleanly (everything written is flushed).

    Examples:

      csst-edge runtime run student.onnx --source drive.mp4 --overlay overlay.mp4 --log run.jsonl

      csst-edge runtime run student.onnx -s csi://0 --backend ort-trt,ort-cuda --harvest /data/h --class-stats idx.npz

      csst-edge runtime run student.engine -s rtsp://10.0.0.5/stream --harvest /data/harvest --harvest-rate 12
    """
    from rich.live import Live
    from rich.text import Text

    from csst_edge.runtime.backends import backend_providers
    from csst_edge.runtime.harvest import HarvestSettings
    from csst_edge.runtime.loop import RuntimeSettings, run_runtime

    if old_output is not None:
        overlay = renamed(overlay, old_output, "--overlay", "--output/-o")
    retries = renamed(retries, old_max_retries, "--retries", "--max-retries")
    if old_providers is not None:
        deprecated("--providers", "--backend (ort-trt, ort-cuda, ort-cpu)")
        if backend is not None:
            fail("--providers is the old spelling of --backend: give only --backend")
        providers = old_providers
    else:
        providers = backend_providers(model, backend)

    harvest_settings = HarvestSettings(
        rate_per_min=harvest_rate,
        quota_mb=harvest_quota_mb,
        min_score=min_score,
        min_sharpness=min_sharpness,
        duplicate_similarity=duplicate_similarity,
        uncertainty=uncertainty,
        confidence=confidence,
    )
    if vehicle:
        harvest_settings.vehicle = vehicle
    settings = RuntimeSettings(
        providers=providers,
        threads=threads,
        spin=spin,
        fit=fit,
        live=live,
        queue_size=queue_size,
        folder_fps=folder_fps,
        max_retries=retries,
        max_frames=max_frames,
        output_video=overlay,
        alpha=alpha,
        show=show,
        log=log,
        harvest=harvest,
        harvest_settings=harvest_settings,
        class_stats=class_stats,
    )

    def status_text(st: dict) -> Text:
        line = (
            f"{st['frames']} frames  {st['fps']:.1f} FPS  {st['latency_ms']:.1f} ms  drops {st['dropped']}"
            f"  queue {st['queued']}"
        )
        if st["reconnects"]:
            line += f"  reconnects {st['reconnects']}"
        if harvest is not None:
            line += f"  harvested {st['harvested']} (kept {st['harvest_frames']})"
        return Text(line)

    live_display = (
        None
        if quiet or not console.is_terminal
        else Live(Text("starting…"), console=console, refresh_per_second=4, transient=False)
    )
    on_status = (lambda st: live_display.update(status_text(st))) if live_display else None
    if live_display:
        live_display.start()
    try:
        summary = run_runtime(
            model,
            source,
            settings,
            on_status=on_status,
            log_message=lambda m: err_console.print(f"[yellow]{m}[/]", highlight=False),
        )
    finally:
        if live_display:
            live_display.stop()
    console.print(
        f"[green]done[/] ({summary.stopped_by}): {summary.frames} frames in {summary.seconds:.1f}s, "
        f"{summary.fps:.1f} FPS, latency {summary.latency_ms_mean:.1f} ms (p95 {summary.latency_ms_p95:.1f}), "
        f"inference {summary.infer_ms_mean:.1f} ms on {summary.backend}; dropped {summary.dropped}, "
        f"reconnects {summary.reconnects}"
    )
    if summary.harvest is not None:
        h = summary.harvest
        top = sorted(h["mean_class_shares"].items(), key=lambda kv: -kv[1])[:5]
        console.print(
            f"harvest {h['folder']}: {h['frames']} frames, {h['bytes'] / 2**20:.1f} MiB "
            f"(this run: +{h['counts']['harvested']}, evicted {h['counts']['evicted']}, duplicates "
            f"{h['counts']['duplicate']}, blurred {h['counts']['blurred']})"
            + ("; mean class shares " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in top) if top else "")
        )


@app.command("sync")
def sync_command(
    harvest: Annotated[Path, typer.Argument(help="Harvest folder (`runtime run --harvest`).")],
    dest: Annotated[
        str,
        typer.Argument(
            help="Destination URL (any fsspec URL: s3://bucket/prefix, gs://..., file:///mnt/usb/harvest, a path); "
            "items go to DEST/<vehicle>/."
        ),
    ],
    vehicle: Annotated[
        str | None, typer.Option(help="Vehicle prefix under DEST (default: the vehicle in the harvest's meta.json).")
    ] = None,
    delete_local: Annotated[
        bool,
        typer.Option(
            "--delete-local", help="Delete each local item once its image and manifest row are confirmed remotely."
        ),
    ] = False,
    max_kbps: Annotated[float, typer.Option(help="Upload bandwidth cap in kilobits per second (0 = no cap).")] = 0.0,
    storage_option: Annotated[
        list[str] | None,
        typer.Option(
            "--storage-option",
            "-O",
            help="fsspec option KEY=VALUE (repeatable; dotted keys nest, JSON values are parsed), e.g. "
            "endpoint_url=http://minio:9000. Credentials are better left to the environment (AWS_ACCESS_KEY_ID ...).",
        ),
    ] = None,
    retries: Annotated[int, typer.Option(help="Retries per object on a failed request before the sync stops.")] = 3,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Upload the finished items of a harvest folder (JPEG + manifest row) to DEST/<vehicle>/, named by content hash:
    a rerun uploads nothing new, a killed or disconnected sync resumes where it stopped, and nothing half-written
    is ever uploaded. Torch-free.

    Examples:

      csst-edge runtime sync /data/harvest s3://fleet-bucket/harvest --vehicle car7 --max-kbps 2000

      csst-edge runtime sync /data/harvest s3://fleet/h -O endpoint_url=http://10.0.0.2:9000 --delete-local

      csst-edge runtime sync /data/harvest file:///mnt/usb/harvest --vehicle car7
    """
    import signal
    import time

    from csst_edge.runtime.sync import SyncSettings, parse_storage_options, sync_harvest

    settings = SyncSettings(
        vehicle=vehicle,
        delete_local=delete_local,
        max_kbps=max_kbps,
        storage_options=parse_storage_options(storage_option or []),
        retries=retries,
    )
    bar = None
    if not quiet and console.is_terminal:
        from csst_edge.progress import progress_bar

        bar = progress_bar("item", console=console, extra_field=True)
    task, sent = None, [0, 0.0]

    def on_start(items: int, nbytes: int) -> None:
        nonlocal task
        sent[1] = time.monotonic()
        if bar is not None:
            task = bar.add_task("sync", total=items, info="")

    def on_bytes(n: int) -> None:
        sent[0] += n
        if bar is not None and task is not None:
            elapsed = max(1e-6, time.monotonic() - sent[1])
            bar.update(task, info=f"{sent[0] / 2**20:.1f} MiB sent, {8 * sent[0] / elapsed / 1000:.0f} kbit/s")

    def on_item(name: str, outcome: str) -> None:
        if bar is not None and task is not None:
            bar.update(task, advance=1)

    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops like Ctrl-C: state saved
    try:
        if bar is not None:
            bar.start()
        summary = sync_harvest(harvest, dest, settings, on_start=on_start, on_bytes=on_bytes, on_item=on_item)
    except KeyboardInterrupt:
        if bar is not None:
            bar.stop()
        err_console.print("[yellow]stopped[/]: what was confirmed is recorded; run the same command to resume")
        raise typer.Exit(130) from None
    finally:
        if bar is not None:
            bar.stop()
        signal.signal(signal.SIGTERM, previous)
    rate = 8 * summary.bytes_uploaded / max(summary.seconds, 1e-6) / 1000
    console.print(
        f"[green]synced[/] {summary.items} items to {summary.destination} in {summary.seconds:.1f}s: "
        f"uploaded {summary.uploaded} ({summary.bytes_uploaded / 2**20:.2f} MiB, {rate:.0f} kbit/s), "
        f"already there {summary.already_remote}, deleted locally {summary.deleted_local}"
        + (f", skipped {summary.skipped} (gone or incomplete)" if summary.skipped else "")
        + (f", removed {summary.partials_removed} partial uploads" if summary.partials_removed else "")
        + (f"; confirmed by {', '.join(summary.verified_by)}" if summary.verified_by else ""),
        highlight=False,
    )
