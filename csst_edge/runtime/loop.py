"""The runtime loop: source → (capture thread) → fit to the model → infer → harvest → log / overlay / display.

    summary = run_runtime("student.onnx", "drive.mp4", RuntimeSettings(harvest=Path("harvest"), log=Path("run.jsonl")))

Stopping: the end of a file or folder ends the run; SIGINT (Ctrl-C) and SIGTERM set a stop flag that the loop
checks between frames, so no write is cut in half; then the capture thread is joined, the overlay video
finalised, the log fsynced and the harvester writes its pending frame. A second Ctrl-C interrupts at once.
Torch-free.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from csst_edge import storage
from csst_edge.errors import CsstError
from csst_edge.fileio import atomic_write_json, file_sha256
from csst_edge.runtime.backends import Backend, load_backend
from csst_edge.runtime.harvest import Harvester, HarvestSettings, load_class_frequencies
from csst_edge.runtime.model_meta import ModelMeta
from csst_edge.runtime.overlay import blend_overlay, draw_text, palette_lut
from csst_edge.runtime.postprocess import Prediction
from csst_edge.runtime.preprocess import FrameFit, fit_frame, labels_to_frame
from csst_edge.runtime.sources import END, CaptureThread, Frame, FrameSource, open_source


class RuntimeOptionError(CsstError):
    """A runtime option cannot be honoured (display without GUI, unwritable output); the message names it."""


@dataclass
class RuntimeSettings:
    providers: str | None = None  # cpu, cuda, tensorrt (comma-separated); default: fastest available
    threads: int | None = None  # ONNX Runtime intra-op threads
    spin: bool = False  # let ORT's idle worker threads spin (fastest on an otherwise idle CPU; starves capture)
    fit: str = "resize"  # resize | letterbox
    live: bool | None = None  # override the source type's default (drop frames when behind, reconnect on failure)
    queue_size: int = 4
    folder_fps: float = 10.0  # media-time rate of an image folder (for the harvest rate limit)
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    max_retries: int | None = None  # consecutive live-source failures before giving up; None = never
    max_frames: int | None = None
    output_video: Path | None = None
    output_fps: float | None = None  # default: the source's fps (files), else 15
    alpha: float = 0.5
    show: bool = False
    log: Path | None = None  # per-frame JSONL
    log_fsync_s: float = 1.0  # the log is flushed every line and fsynced at most this often
    harvest: Path | str | None = None  # a folder, or a URL (kept in a local staging folder, mirrored at the end)
    harvest_settings: HarvestSettings = field(default_factory=HarvestSettings)
    class_stats: Path | None = None
    analysis_stride: int = 4
    status_every_s: float = 0.5
    summary_json: Path | None = None  # default: next to the log, or in the harvest folder


@dataclass
class RunSummary:
    model: str
    backend: str
    source: str
    frames: int
    seconds: float
    fps: float
    latency_ms_mean: float
    latency_ms_p95: float
    infer_ms_mean: float
    dropped: int
    reconnects: int
    failures: int
    stopped_by: str  # end | signal | max-frames | display | source-error
    harvest: dict | None = None
    unreadable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


class FrameLog:
    """Per-frame JSONL: every line is flushed to the OS at once (a killed process loses nothing), and fsynced at
    most every `fsync_s` seconds (a power cut loses at most that much) — an fsync per frame would cost more than
    a small model's inference on an SD card."""

    def __init__(self, path: Path, fsync_s: float = 1.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.file = open(self.path, "a", encoding="utf-8")
        except OSError as e:
            raise RuntimeOptionError(f"{self.path}: cannot open the --log file ({e.strerror})") from None
        self.fsync_s = fsync_s
        self._last_sync = time.monotonic()

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.file.flush()
        now = time.monotonic()
        if now - self._last_sync >= self.fsync_s:
            os.fsync(self.file.fileno())
            self._last_sync = now

    def close(self) -> None:
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()


class OverlayVideoWriter(threading.Thread):
    """Blends and encodes the overlay video in its own thread, so encoding overlaps the next inference."""

    def __init__(self, path: Path, fps: float, lut: np.ndarray, alpha: float):
        super().__init__(name="overlay-writer", daemon=True)
        self.path, self.fps, self.lut, self.alpha = Path(path), fps, lut, alpha
        self.queue: queue.Queue = queue.Queue(maxsize=8)
        self.writer: cv2.VideoWriter | None = None
        self.error: Exception | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def submit(self, frame: np.ndarray, prediction: Prediction, fit, text: list[str]) -> None:
        """Queue a frame; the full-resolution argmax happens in this thread too (it costs as much as the blend)."""
        if self.error is not None:
            raise self.error
        self.queue.put((frame, prediction, fit, text))

    def run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                break
            if self.error is not None:
                continue
            frame, prediction, fit, text = item
            try:
                labels = labels_to_frame(prediction.labels(), fit)
                if self.writer is None:
                    h, w = frame.shape[:2]
                    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix.lower() != ".avi" else "MJPG"))
                    self.writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (w, h))
                    if not self.writer.isOpened():
                        raise RuntimeOptionError(f"{self.path}: OpenCV cannot write this video (try .mp4 or .avi)")
                image = draw_text(blend_overlay(frame, labels, self.lut, self.alpha), text)
                self.writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            except Exception as e:
                self.error = e

    def close(self) -> None:
        self.queue.put(None)
        self.join()
        if self.writer is not None:
            self.writer.release()


def gui_available() -> bool:
    import re

    match = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    return bool(match and match.group(1).upper() not in ("NONE", "NO"))


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event):
    """SIGINT/SIGTERM set `stop` (the loop finishes the current frame and cleans up); a second SIGINT raises
    KeyboardInterrupt at once. Only possible in the main thread; elsewhere the caller owns signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def open_backend(model_path: str | os.PathLike, settings: RuntimeSettings) -> Backend:
    """The model's backend as the runtime uses it. ONNX Runtime's worker threads spin between ops by default;
    next to a capture thread on a 2-6 core CPU that costs more than it saves (measured in
    benchmarks/runtime.py), so spinning is off unless `spin`."""
    extra = {}
    if Path(model_path).suffix.lower() == ".onnx" and not settings.spin:
        extra["session_config"] = {"session.intra_op.allow_spinning": "0"}
    return load_backend(model_path, providers=settings.providers, threads=settings.threads, **extra)


class FrameStep:
    """One frame through the model and every output: fit → infer → harvest → log line → overlay video / window.

    Keeps the run's counters (frames, latencies) for the status line and the summary. The overlay video is
    opened at the first frame (its fps is the source's, known once it is open; a run without frames writes no
    file) and closed by `close_video`.
    """

    def __init__(
        self,
        backend: Backend,
        settings: RuntimeSettings,
        source: FrameSource,
        capture: CaptureThread,
        harvester: Harvester | None,
        frame_log: FrameLog | None,
    ):
        meta = backend.meta
        self.backend, self.meta, self.settings, self.source, self.capture = backend, meta, settings, source, capture
        self.harvester, self.frame_log = harvester, frame_log
        self.height = meta.input_height or meta.export_height
        self.width = meta.input_width or meta.export_width
        self.lut = palette_lut(meta.palette, meta.num_classes)
        self.window_name = f"csst-edge: {source.name}"
        self.writer: OverlayVideoWriter | None = None
        self.frames = 0
        self.latencies: deque[float] = deque(maxlen=10_000)
        self.infer_times: deque[float] = deque(maxlen=10_000)
        self.recent: deque[tuple[float, float]] = deque(maxlen=64)  # (finish time, latency) for the status line
        self.finished = 0.0  # perf_counter() when the last frame was done
        self.quit = False  # q or Esc was pressed in the --show window

    def __call__(self, item: Frame) -> dict:
        """Process one captured frame; returns the status after it (see `_status`)."""
        t0 = time.perf_counter()
        fit = fit_frame(item.image, self.height, self.width, self.settings.fit)
        t1 = time.perf_counter()
        output = self.backend.infer(fit.image)
        t2 = time.perf_counter()
        prediction = Prediction(output[0], self.meta, self.settings.analysis_stride)
        scores = None
        if self.harvester is not None:
            content = fit.image[fit.top : fit.top + fit.content_height, fit.left : fit.left + fit.content_width]
            scores = self.harvester.consider(item, content, prediction)
        shares = prediction.class_shares()
        t3 = time.perf_counter()
        latency = t3 - t0
        self.latencies.append(latency)
        self.infer_times.append(t2 - t1)
        self.recent.append((t3, latency))
        self.frames += 1
        self.finished = t3
        status = _status(self.recent, self.frames, self.capture, self.harvester)
        if self.frame_log is not None:
            record = {
                "frame": item.index,
                "position": item.position,
                "time": round(item.wall, 3),
                "media_time": round(item.time, 3),
                "latency_ms": round(1000 * latency, 2),
                "infer_ms": round(1000 * (t2 - t1), 2),
                "age_ms": round(1000 * (time.time() - item.wall), 1),
                "class_shares": [round(float(v), 4) for v in shares],
                "dropped": self.capture.stats.dropped,
            }
            if scores is not None:
                record["harvest"] = scores.to_log()
            self.frame_log.write(record)
        if self.settings.output_video is not None or self.settings.show:
            self._draw(item, prediction, fit, status)
        return status

    def _draw(self, item: Frame, prediction: Prediction, fit: FrameFit, status: dict) -> None:
        text = [
            f"{status['fps']:.1f} FPS  {status['latency_ms']:.0f} ms  drops {status['dropped']}"
            + (f"  harvested {status['harvested']}" if self.harvester is not None else "")
        ]
        if self.settings.output_video is not None:
            if self.writer is None:
                fps = self.settings.output_fps or getattr(self.source, "fps", 0.0) or 15.0
                self.writer = OverlayVideoWriter(self.settings.output_video, fps, self.lut, self.settings.alpha)
                self.writer.start()
            self.writer.submit(item.image, prediction, fit, text)
        if self.settings.show:
            labels = labels_to_frame(prediction.labels(), fit)
            shown = draw_text(blend_overlay(item.image, labels, self.lut, self.settings.alpha), text)
            cv2.imshow(self.window_name, cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
            self.quit = cv2.waitKey(1) & 0xFF in (27, ord("q"))

    def close_video(self) -> None:
        if self.writer is not None:
            self.writer.close()


def run_runtime(
    model_path: str | os.PathLike,
    source_spec: str,
    settings: RuntimeSettings | None = None,
    on_status: Callable[[dict], None] | None = None,
    stop: threading.Event | None = None,
    backend: Backend | None = None,
    log_message: Callable[[str], None] | None = None,
) -> RunSummary:
    """Run an exported model on a source until it ends, `max_frames`, or a stop signal. Returns the summary
    (also written as JSON next to the log / in the harvest folder).

    Everything opened is closed when the run ends, fails or is interrupted, the capture thread stopped first.
    A closer that fails does not keep the others from running (each flushes something a user wants); after a
    clean run the summary is written and then the first such error raised.
    """
    settings = settings or RuntimeSettings()
    stop = stop or threading.Event()
    say = log_message or (lambda message: None)
    model_path = Path(model_path)
    if settings.show and not gui_available():
        raise RuntimeOptionError(
            "--show needs OpenCV with a GUI backend; this one has none (pip's headless build?). "
            "Use --overlay to write an overlay video instead"
        )
    close_errors: list[Exception] = []
    with contextlib.ExitStack() as stack:
        if settings.show:
            stack.callback(_destroy_windows)
        backend = backend or open_backend(model_path, settings)
        stack.callback(_close_into, backend.close, close_errors)
        source = open_source(source_spec, live=settings.live, folder_fps=settings.folder_fps)
        capture = CaptureThread(
            source,
            settings.queue_size,
            settings.backoff_s,
            settings.max_backoff_s,
            settings.max_retries,
            stop=stop,
            log=say,
        )
        harvester = _open_harvester(settings, backend.meta, model_path, source.name, say)
        if harvester is not None:
            stack.callback(_close_into, harvester.close, close_errors)
        frame_log = FrameLog(settings.log, settings.log_fsync_s) if settings.log else None
        if frame_log is not None:
            stack.callback(_close_into, frame_log.close, close_errors)
        step = FrameStep(backend, settings, source, capture, harvester, frame_log)
        stack.callback(_close_into, step.close_video, close_errors)
        t_start = time.perf_counter()
        capture.start()
        stack.callback(_stop_capture, capture, stop)
        stack.enter_context(stop_on_signals(stop))
        stopped_by = _run_frames(capture, step, stop, settings, on_status)
    elapsed = time.perf_counter() - t_start
    lat = np.array(step.latencies) if step.latencies else np.zeros(1)
    summary = RunSummary(
        model=str(model_path),
        backend=backend.name,
        source=source.name,
        frames=step.frames,
        seconds=round(elapsed, 3),
        fps=round(step.frames / elapsed, 2) if elapsed > 0 else 0.0,
        latency_ms_mean=round(1000 * float(lat.mean()), 2),
        latency_ms_p95=round(1000 * float(np.percentile(lat, 95)), 2),
        infer_ms_mean=round(1000 * float(np.mean(step.infer_times)) if step.infer_times else 0.0, 2),
        dropped=capture.stats.dropped,
        reconnects=capture.stats.reconnects,
        failures=capture.stats.failures,
        stopped_by=stopped_by,
        harvest=harvester.summary() if harvester else None,
        unreadable=capture.stats.unreadable,
    )
    summary_path = settings.summary_json or (
        settings.log.with_name(settings.log.stem + ".summary.json")
        if settings.log
        else (harvester.folder / "last_run.json" if harvester else None)
    )
    if summary_path is not None:
        atomic_write_json(summary_path, summary.to_dict())
    if step.writer is not None and step.writer.error is not None:
        raise step.writer.error
    if close_errors:
        raise close_errors[0]
    if capture.error is not None:
        raise capture.error
    return summary


def _run_frames(
    capture: CaptureThread,
    step: FrameStep,
    stop: threading.Event,
    settings: RuntimeSettings,
    on_status: Callable[[dict], None] | None,
) -> str:
    """Feed captured frames to `step` until the source ends, `max_frames`, a stop or the window's q / Esc;
    returns how the run stopped (a `RunSummary.stopped_by`)."""
    stopped_by, last_status = "end", 0.0
    while True:
        if stop.is_set():
            return "signal" if stopped_by == "end" else stopped_by
        item = capture.queue.get(timeout=0.2)
        if item is None:
            continue
        if item is END:
            return "source-error" if capture.error is not None else stopped_by
        status = step(item)
        if step.quit:
            stopped_by = "display"
            stop.set()
        if on_status is not None and step.finished - last_status >= settings.status_every_s:
            last_status = step.finished
            on_status(status)
        if settings.max_frames is not None and step.frames >= settings.max_frames:
            return "max-frames"


def _open_harvester(
    settings: RuntimeSettings, meta: ModelMeta, model_path: Path, source_name: str, say: Callable[[str], None]
) -> Harvester | None:
    if settings.harvest is None:
        return None
    freqs = load_class_frequencies(settings.class_stats, meta.num_classes) if settings.class_stats else None
    harvester = Harvester(
        settings.harvest,
        meta,
        settings.harvest_settings,
        model_file=model_path.name,
        model_hash=file_sha256(model_path) if model_path.is_file() else None,
        source_name=source_name,
        class_frequencies=freqs,
    )
    rec = harvester.recovered
    if rec["orphans_deleted"] or rec["evictions_completed"]:
        say(
            f"{storage.redact(settings.harvest)}: cleaned up after an interrupted run ({rec['orphans_deleted']} "
            f"unlisted file(s) deleted, {rec['evictions_completed']} eviction(s) completed)"
        )
    return harvester


def _close_into(close: Callable[[], None], errors: list[Exception]) -> None:
    """Run `close`, keeping its error in `errors` so the closers after it still run."""
    try:
        close()
    except Exception as e:
        errors.append(e)


def _stop_capture(capture: CaptureThread, stop: threading.Event) -> None:
    stop.set()
    capture.join(timeout=10.0)


def _destroy_windows() -> None:
    with contextlib.suppress(cv2.error):
        cv2.destroyAllWindows()


def _status(recent: deque, frames: int, capture: CaptureThread, harvester: Harvester | None) -> dict:
    fps = 0.0
    if len(recent) >= 2 and recent[-1][0] > recent[0][0]:
        fps = (len(recent) - 1) / (recent[-1][0] - recent[0][0])
    latency = 1000 * float(np.mean([lat for _, lat in recent])) if recent else 0.0
    return {
        "frames": frames,
        "fps": fps,
        "latency_ms": latency,
        "dropped": capture.stats.dropped,
        "reconnects": capture.stats.reconnects,
        "queued": len(capture.queue),
        "harvested": harvester.counts["harvested"] if harvester else 0,
        "harvest_frames": len(harvester.entries) if harvester else 0,
    }
