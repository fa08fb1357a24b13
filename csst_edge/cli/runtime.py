"""`csst-edge runtime run`: an exported model on a video / camera / RTSP / GStreamer source, with overlay, per-frame
log and frame harvesting. Torch-free, like everything it calls: this is the command the vehicle runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csst_edge.cli.common import (
    Fit,
    MaxFrames,
    Quiet,
    command_group,
    console,
    deprecated,
    err_console,
    fail,
    renamed,
    settings_from,
)

app = command_group(
    "The edge runtime: run an exported model on a live or recorded source, and harvest frames for the next round."
)


@app.callback()
def runtime_group() -> None:
    """The edge runtime (torch-free): run an exported model on a source, log, overlay, harvest frames."""


_HELP = {  # help texts too long to stand on their option's line, by parameter name
    "model": "Exported model: .onnx (metadata inside) or TensorRT .engine (+ .engine.json).",
    "source": "Video file, image folder, camera index (0), /dev/videoN, rtsp:// or http(s):// URL, "
    "csi://0 (Jetson CSI), or a GStreamer pipeline ('... ! appsink').",
    "backend": "ort-trt, ort-cuda, ort-cpu for an .onnx (comma-separated: tried in this order), trt for an .engine; "
    "the names `bench --backends` uses (default: the fastest available).",
    "spin": "Let ONNX Runtime's idle threads spin (faster only on an otherwise idle CPU).",
    "overlay": "Write the colour overlay as a video (.mp4 or .avi).",
    "show": "Show the overlay in a window (needs OpenCV with a GUI; q / Esc stops).",
    "log": "Per-frame JSONL log (timestamp, latency, class shares, harvest scores).",
    "harvest": "Harvest folder (or URL, mirrored when the run ends): keep the frames the next round learns most "
    "from (pseudo-label input).",
    "harvest_rate": "At most this many harvested frames per minute (best frame of each window; 0 = no limit).",
    "harvest_quota_mb": "Disk quota of the harvest; the lowest-scoring frames are evicted first.",
    "min_sharpness": "Reject frames whose Laplacian variance (at 320 px width) is below this.",
    "duplicate_similarity": "Skip frames at least this similar (cosine of thumbnails) to a recent harvested one.",
    "uncertainty": "entropy (mean per-pixel entropy) or low-confidence (share of pixels below --confidence).",
    "confidence": "Top-probability threshold for --uncertainty low-confidence.",
    "class_stats": "Training-set class frequencies for the rarity score: a centroid index .npz "
    "(`csst-edge data index`) or a JSON list.",
    "vehicle": "Vehicle id in harvested file names and the manifest (default: host name).",
    "live": "Override the source type: live sources drop frames when behind and reconnect on failure.",
    "retries": "Give up on a live source after this many consecutive failed retries (default: never).",
    "folder_fps": "Frame rate an image folder is treated as having (harvest rate limit).",
    # runtime sync
    "dest": "Destination URL (any fsspec URL: s3://bucket/prefix, gs://..., file:///mnt/usb/harvest, a path); "
    "items go to DEST/<vehicle>/.",
    "vehicle_prefix": "Vehicle prefix under DEST (default: the vehicle in the harvest's meta.json).",
    "delete_local": "Delete each local item once its image and manifest row are confirmed remotely.",
    "storage_option": "fsspec option KEY=VALUE (repeatable; dotted keys nest, JSON values are parsed), e.g. "
    "endpoint_url=http://minio:9000. Credentials are better left to the environment (AWS_ACCESS_KEY_ID ...).",
}

# the old spellings, hidden: each still works, with a deprecation line
OldOutput = Annotated[Path | None, typer.Option("--output", "-o", hidden=True, help="Deprecated: --overlay.")]
OldProviders = Annotated[str | None, typer.Option("--providers", hidden=True, help="Deprecated: --backend.")]
OldMaxRetries = Annotated[int | None, typer.Option("--max-retries", hidden=True, help="Deprecated: --retries.")]


@app.command("run")
def run_command(
    model: Annotated[Path, typer.Argument(help=_HELP["model"])],
    source: Annotated[str, typer.Option("--source", "-s", help=_HELP["source"])],
    backend: Annotated[str | None, typer.Option(help=_HELP["backend"])] = None,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime CPU threads.")] = None,
    spin: Annotated[bool, typer.Option("--spin/--no-spin", help=_HELP["spin"])] = False,
    fit: Fit = "resize",
    overlay: Annotated[Path | None, typer.Option("--overlay", help=_HELP["overlay"])] = None,
    show: Annotated[bool, typer.Option("--show", help=_HELP["show"])] = False,
    alpha: Annotated[float, typer.Option(help="Overlay opacity.")] = 0.5,
    log: Annotated[Path | None, typer.Option(help=_HELP["log"])] = None,
    harvest: Annotated[str | None, typer.Option(help=_HELP["harvest"])] = None,
    harvest_rate: Annotated[float, typer.Option(help=_HELP["harvest_rate"])] = 6.0,
    harvest_quota_mb: Annotated[float, typer.Option(help=_HELP["harvest_quota_mb"])] = 2048.0,
    min_score: Annotated[float, typer.Option(help="Harvest only frames scoring at least this (0..1).")] = 0.25,
    min_sharpness: Annotated[float, typer.Option(help=_HELP["min_sharpness"])] = 20.0,
    duplicate_similarity: Annotated[float, typer.Option(help=_HELP["duplicate_similarity"])] = 0.95,
    uncertainty: Annotated[str, typer.Option(help=_HELP["uncertainty"])] = "entropy",
    confidence: Annotated[float, typer.Option(help=_HELP["confidence"])] = 0.6,
    class_stats: Annotated[Path | None, typer.Option(help=_HELP["class_stats"])] = None,
    vehicle: Annotated[str | None, typer.Option(help=_HELP["vehicle"])] = None,
    live: Annotated[bool | None, typer.Option("--live/--no-live", help=_HELP["live"])] = None,
    queue_size: Annotated[int, typer.Option(help="Frames buffered between capture and inference.")] = 4,
    retries: Annotated[int | None, typer.Option(help=_HELP["retries"])] = None,
    max_frames: MaxFrames = None,
    folder_fps: Annotated[float, typer.Option(help=_HELP["folder_fps"])] = 10.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live status line.")] = False,
    old_output: OldOutput = None,
    old_providers: OldProviders = None,
    old_max_retries: OldMaxRetries = None,
) -> None:
    """Run MODEL on a source; Ctrl-C or SIGTERM stops cleanly (everything written is flushed).

    Examples:

      csst-edge runtime run student.onnx --source drive.mp4 --overlay overlay.mp4 --log run.jsonl

      csst-edge runtime run student.onnx -s csi://0 --backend ort-trt,ort-cuda --harvest /data/h --class-stats idx.npz

      csst-edge runtime run student.engine -s rtsp://10.0.0.5/stream --harvest /data/harvest --harvest-rate 12
    """
    from csst_edge.runtime.loop import RuntimeSettings

    overlay = renamed(overlay, old_output, "--overlay", "--output/-o")
    retries = renamed(retries, old_max_retries, "--retries", "--max-retries")
    settings = settings_from(
        RuntimeSettings,
        locals(),
        providers=_providers(model, backend, old_providers),
        max_retries=retries,
        output_video=overlay,
        harvest_settings=_harvest_settings(locals()),
    )
    summary = _run_with_status_line(model, source, settings, quiet)
    _print_run_summary(summary)
    if summary.harvest is not None:
        _print_harvest_summary(summary.harvest)


def _providers(model: Path, backend: str | None, old_providers: str | None) -> str | None:
    """The ONNX Runtime providers for --backend, or the deprecated --providers list as it was given."""
    from csst_edge.runtime.backends import backend_providers

    if old_providers is None:
        return backend_providers(model, backend)
    deprecated("--providers", "--backend (ort-trt, ort-cuda, ort-cpu)")
    if backend is not None:
        fail("--providers is the old spelling of --backend: give only --backend")
    return old_providers


def _harvest_settings(params: dict):
    from csst_edge.runtime.harvest import HarvestSettings

    return settings_from(
        HarvestSettings,
        params,
        rate_per_min=params["harvest_rate"],
        quota_mb=params["harvest_quota_mb"],
        vehicle=params["vehicle"] or HarvestSettings().vehicle,  # no --vehicle: the default, the host name
    )


def _run_with_status_line(model: Path, source: str, settings, quiet: bool):
    """run_runtime with a live status line on a terminal (not with -q, nor when the output is piped)."""
    from rich.live import Live
    from rich.text import Text

    from csst_edge.runtime.loop import run_runtime

    harvesting = settings.harvest is not None
    display = None
    if not quiet and console.is_terminal:
        display = Live(Text("starting…"), console=console, refresh_per_second=4, transient=False)
        display.start()
    try:
        return run_runtime(
            model,
            source,
            settings,
            on_status=(lambda st: display.update(_status_text(st, harvesting))) if display else None,
            log_message=lambda m: err_console.print(f"[yellow]{m}[/]", highlight=False),
        )
    finally:
        if display:
            display.stop()


def _status_text(st: dict, harvesting: bool):
    from rich.text import Text

    line = (
        f"{st['frames']} frames  {st['fps']:.1f} FPS  {st['latency_ms']:.1f} ms  drops {st['dropped']}"
        f"  queue {st['queued']}"
    )
    if st["reconnects"]:
        line += f"  reconnects {st['reconnects']}"
    if harvesting:
        line += f"  harvested {st['harvested']} (kept {st['harvest_frames']})"
    return Text(line)


def _print_run_summary(summary) -> None:
    console.print(
        f"[green]done[/] ({summary.stopped_by}): {summary.frames} frames in {summary.seconds:.1f}s, "
        f"{summary.fps:.1f} FPS, latency {summary.latency_ms_mean:.1f} ms (p95 {summary.latency_ms_p95:.1f}), "
        f"inference {summary.infer_ms_mean:.1f} ms on {summary.backend}; dropped {summary.dropped}, "
        f"reconnects {summary.reconnects}"
    )


def _print_harvest_summary(h: dict) -> None:
    top = sorted(h["mean_class_shares"].items(), key=lambda kv: -kv[1])[:5]
    console.print(
        f"harvest {h['folder']}: {h['frames']} frames, {h['bytes'] / 2**20:.1f} MiB "
        f"(this run: +{h['counts']['harvested']}, evicted {h['counts']['evicted']}, duplicates "
        f"{h['counts']['duplicate']}, blurred {h['counts']['blurred']})"
        + ("; mean class shares " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in top) if top else "")
    )


StorageOption = Annotated[list[str] | None, typer.Option("--storage-option", "-O", help=_HELP["storage_option"])]


@app.command("sync")
def sync_command(
    harvest: Annotated[Path, typer.Argument(help="Harvest folder (`runtime run --harvest`).")],
    dest: Annotated[str, typer.Argument(help=_HELP["dest"])],
    vehicle: Annotated[str | None, typer.Option(help=_HELP["vehicle_prefix"])] = None,
    delete_local: Annotated[bool, typer.Option("--delete-local", help=_HELP["delete_local"])] = False,
    max_kbps: Annotated[float, typer.Option(help="Upload bandwidth cap in kilobits per second (0 = no cap).")] = 0.0,
    storage_option: StorageOption = None,
    retries: Annotated[int, typer.Option(help="Retries per object on a failed request before the sync stops.")] = 3,
    quiet: Quiet = False,
) -> None:
    """Upload the finished items of a harvest folder (JPEG + manifest row) to DEST/<vehicle>/, named by content hash:
    a rerun uploads nothing new, a killed or disconnected sync resumes where it stopped, and nothing half-written
    is ever uploaded. Torch-free.

    Examples:

      csst-edge runtime sync /data/harvest s3://fleet-bucket/harvest --vehicle car7 --max-kbps 2000

      csst-edge runtime sync /data/harvest s3://fleet/h -O endpoint_url=http://10.0.0.2:9000 --delete-local

      csst-edge runtime sync /data/harvest file:///mnt/usb/harvest --vehicle car7
    """
    from csst_edge.runtime.sync import SyncSettings, parse_storage_options

    settings = settings_from(SyncSettings, locals(), storage_options=parse_storage_options(storage_option or []))
    summary = _sync_with_progress(harvest, dest, settings, _SyncProgress(quiet))
    _print_sync_summary(summary)


class _SyncProgress:
    """The sync's progress bar (items, MiB sent, kbit/s) on a terminal; without one (or with -q) it does nothing."""

    def __init__(self, quiet: bool):
        self.bar = None
        if not quiet and console.is_terminal:
            from csst_edge.progress import progress_bar

            self.bar = progress_bar("item", console=console, extra_field=True)
        self.task, self.sent, self.started = None, 0, 0.0

    def start(self) -> None:
        if self.bar is not None:
            self.bar.start()

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()

    def on_start(self, items: int, nbytes: int) -> None:
        import time

        self.started = time.monotonic()
        if self.bar is not None:
            self.task = self.bar.add_task("sync", total=items, info="")

    def on_bytes(self, n: int) -> None:
        import time

        self.sent += n
        if self.bar is not None and self.task is not None:
            elapsed = max(1e-6, time.monotonic() - self.started)
            rate = 8 * self.sent / elapsed / 1000
            self.bar.update(self.task, info=f"{self.sent / 2**20:.1f} MiB sent, {rate:.0f} kbit/s")

    def on_item(self, name: str, outcome: str) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, advance=1)


def _sync_with_progress(harvest: Path, dest: str, settings, progress: _SyncProgress):
    """sync_harvest, stopped by Ctrl-C or SIGTERM with what was confirmed recorded (exit code 130)."""
    import signal

    from csst_edge.runtime.sync import sync_harvest

    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops like Ctrl-C: state saved
    try:
        progress.start()
        return sync_harvest(
            harvest, dest, settings, on_start=progress.on_start, on_bytes=progress.on_bytes, on_item=progress.on_item
        )
    except KeyboardInterrupt:
        progress.stop()
        err_console.print("[yellow]stopped[/]: what was confirmed is recorded; run the same command to resume")
        raise typer.Exit(130) from None
    finally:
        progress.stop()
        signal.signal(signal.SIGTERM, previous)


def _print_sync_summary(summary) -> None:
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
