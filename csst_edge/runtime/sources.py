"""Frame sources for the runtime, and the capture thread that decodes them ahead of inference.

    source = open_source("drive.mp4")                 # video file: every frame, ends the run at its end
    source = open_source("frames/")                   # image folder (recursive, sorted): same
    source = open_source("0")                         # camera index (V4L2 / USB)
    source = open_source("rtsp://cam.local/stream")   # RTSP / HTTP(S) URL
    source = open_source("csi://0")                   # Jetson CSI camera (nvarguscamerasrc GStreamer pipeline)
    source = open_source("v4l2src device=/dev/video0 ! videoconvert ! appsink")   # any GStreamer pipeline

Files and folders are *finite*: the capture thread blocks when the queue is full, so no frame is ever dropped,
and their end ends the run. Cameras, URLs and pipelines are *live*: the world does not wait for the model, so
when inference falls behind the oldest queued frame is dropped (and counted), and a source that fails (cable,
network, camera daemon restart) is reopened with exponential backoff while the run goes on.
"""

from __future__ import annotations

import collections
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np

from csst_edge import storage
from csst_edge.errors import CsstError
from csst_edge.fileio import check_image_pixels

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp")


class SourceError(CsstError):
    """A frame source cannot be opened or read; the message names the source."""


@dataclass
class Frame:
    index: int  # frames read from the source so far, dropped ones included (gaps in the log = drops)
    image: np.ndarray  # RGB uint8 H x W x 3
    time: float  # media time (s): video position for files, seconds since the run started for live sources
    wall: float  # time.time() when it was captured
    position: str  # frame number in a video, relative path in a folder


# --------------------------------------------------------------------------------------------------- sources
class FrameSource:
    """open() → read() until None → close(). `live` sources may drop frames and are reopened on failure."""

    name: str = "source"
    live: bool = False
    kind: str = "source"

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> tuple[np.ndarray, str, float | None] | None:
        """(RGB frame, position, media time or None) or None at the end / on a failed read."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class CaptureSource(FrameSource):
    """Anything `cv2.VideoCapture` opens: a video file, a camera index, a URL or a GStreamer pipeline."""

    def __init__(
        self,
        target: str | int,
        kind: str,
        live: bool,
        api: int = cv2.CAP_ANY,
        name: str | None = None,
        open_timeout_s: float = 10.0,
    ):
        self.target, self.kind, self.live, self.api = target, kind, live, api
        # a URL's user:password@ and secret query values never reach a name: it is printed, logged and stored
        self.name = storage.redact_text(name or str(target))
        self.open_timeout_s = open_timeout_s
        self.cap: cv2.VideoCapture | None = None
        self.fps = 0.0
        self._count = 0

    def open(self) -> None:
        self.close()
        params = []
        if self.kind == "url":  # without these a dead RTSP server blocks for OpenCV's default 30 s
            ms = int(self.open_timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        try:
            cap = cv2.VideoCapture(self.target, self.api, params) if params else cv2.VideoCapture(self.target, self.api)
        except cv2.error as e:
            raise SourceError(
                f"{self.name}: OpenCV cannot open it ({storage.redact_text(str(e).strip()[:200])})"
            ) from None
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.name}: cannot open {self.kind} source")
        self.cap = cap
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (0 < self.fps < 1000):
            self.fps = 0.0
        self._count = 0

    def read(self):
        if self.cap is None:
            return None
        ok, bgr = self.cap.read()
        if not ok or bgr is None:
            return None
        n = self._count
        self._count += 1
        media_time = n / self.fps if (not self.live and self.fps) else None
        if bgr.ndim == 2:
            return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB), str(n), media_time
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), str(n), media_time

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class ImageFolderSource(FrameSource):
    """Images of a folder (recursive, sorted by relative path), as if they were a video at `fps`."""

    kind = "folder"
    live = False

    def __init__(self, folder: str | os.PathLike, fps: float = 10.0):
        self.folder = Path(folder)
        self.name = str(self.folder)
        self.fps = float(fps)
        self.files: list[Path] = []
        self._next = 0
        self.unreadable: list[str] = []

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder}: image folder not found")
        self.files = sorted(
            p
            for p in self.folder.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        if not self.files:
            raise SourceError(f"{self.folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        self._next = 0

    def read(self):
        while self._next < len(self.files):
            i = self._next
            self._next += 1
            path = self.files[i]
            bgr = None
            try:
                data = path.read_bytes()
                check_image_pixels(data, str(path))  # the pixel limit, from the header: a bomb is never decoded
                bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            except (OSError, ValueError):
                pass
            if bgr is None:  # a corrupt or oversized image is skipped (and reported), not the end of the run
                self.unreadable.append(str(path))
                continue
            rel = path.relative_to(self.folder).as_posix()
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), rel, i / self.fps
        return None


def gstreamer_available() -> bool:
    info = cv2.getBuildInformation()
    match = re.search(r"GStreamer:\s*(\S+)", info)
    return bool(match and match.group(1).upper().startswith("YES"))


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: int = 30, flip: int = 0) -> str:
    """The usual Jetson CSI camera pipeline: nvarguscamerasrc (ISP) → NVMM → nvvidconv → BGR appsink."""
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
        f"framerate={fps}/1, format=NV12 ! nvvidconv flip-method={flip} ! video/x-raw, format=BGRx ! "
        f"videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=2"
    )


def open_source(
    spec: str | int | os.PathLike, live: bool | None = None, folder_fps: float = 10.0, open_timeout_s: float = 10.0
) -> FrameSource:
    """A source from a command-line string (see the module docstring). `live` overrides the type's default."""
    text = str(spec).strip()
    if not text:
        raise SourceError("--source is empty")
    source: FrameSource
    if "!" in text:  # GStreamer pipeline syntax
        source = _gstreamer_source(text if "appsink" in text else text + " ! appsink drop=true max-buffers=2", text)
    elif text.startswith("csi://"):
        source = _gstreamer_source(_csi_from_url(text), text)
    elif re.fullmatch(r"\d+", text):
        source = CaptureSource(int(text), "camera", live=True, name=f"camera {text}")
    elif urlparse(text).scheme.lower() in URL_SCHEMES:
        source = CaptureSource(text, "url", live=True, api=cv2.CAP_FFMPEG, open_timeout_s=open_timeout_s)
    else:
        path = Path(text)
        if path.is_dir():
            source = ImageFolderSource(path, folder_fps)
        elif path.is_file():
            source = CaptureSource(str(path), "file", live=False, name=str(path))
        elif text.startswith("/dev/video"):
            source = CaptureSource(text, "camera", live=True, api=cv2.CAP_V4L2)
        else:
            raise SourceError(
                f"{storage.redact_text(text)}: --source is not a file, folder, camera index, URL or GStreamer pipeline"
            )
    if live is not None:
        source.live = bool(live)
    return source


def _gstreamer_source(pipeline: str, name: str) -> CaptureSource:
    if not gstreamer_available():
        raise SourceError(
            f"{storage.redact_text(name)}: this OpenCV is built without GStreamer (use the system OpenCV on Jetson, "
            "not pip's opencv-python; see Dockerfile.jetson)"
        )
    return CaptureSource(pipeline, "gstreamer", live=True, api=cv2.CAP_GSTREAMER, name=name)


def _csi_from_url(url: str) -> str:
    """csi://SENSOR?width=W&height=H&fps=F&flip=M → nvarguscamerasrc pipeline."""
    parsed = urlparse(url)
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    try:
        sensor = int(parsed.netloc or 0)
        size = {k: int(query[k]) for k in ("width", "height", "fps", "flip") if k in query}
    except ValueError:
        raise SourceError(f"{url}: expected csi://SENSOR_ID?width=W&height=H&fps=F&flip=M with integers") from None
    return csi_pipeline(sensor, **size)


# ----------------------------------------------------------------------------------------------------- queue
END = object()  # returned by FrameQueue.get once the source is exhausted and the queue is empty


class FrameQueue:
    """A bounded FIFO between the capture thread and the inference loop.

    `put(drop_oldest=True)` (live sources) never blocks: a full queue loses its oldest frame, so inference always
    works on the freshest frames and the lag stays bounded. `put(drop_oldest=False)` (files) waits for room.
    """

    def __init__(self, maxsize: int = 4):
        if maxsize < 1:
            raise SourceError(f"--queue-size must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item, drop_oldest: bool, stop: threading.Event | None = None) -> bool:
        """False when `stop` was set while waiting for room (the item is not queued)."""
        with self._cond:
            while len(self._items) >= self.maxsize:
                if drop_oldest:
                    self._items.popleft()
                    self.dropped += 1
                    break
                if stop is not None and stop.is_set():
                    return False
                self._cond.wait(0.05)
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None):
        """The next item, END after close() once empty, or None when `timeout` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    return END
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining if remaining is not None else 0.1)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


# -------------------------------------------------------------------------------------------- capture thread
@dataclass
class CaptureStats:
    frames: int = 0  # frames read from the source
    dropped: int = 0  # live frames discarded because inference fell behind
    failures: int = 0  # failed opens / reads of a live source
    reconnects: int = 0  # successful reopenings after a failure
    last_error: str | None = None
    unreadable: list[str] = field(default_factory=list)


class CaptureThread(threading.Thread):
    """Reads `source` into a FrameQueue in its own thread (decoding overlaps inference).

    Live sources: a failed open or read closes the source and retries after `backoff_s`, doubling up to
    `max_backoff_s`; after `max_retries` consecutive failures (None = never) the thread gives up and ends the
    run. Finite sources: opened before the thread starts (a wrong path fails at once), read to the end.
    """

    def __init__(
        self,
        source: FrameSource,
        queue_size: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        max_retries: int | None = None,
        stop: threading.Event | None = None,
        log=None,
    ):
        super().__init__(name=f"capture:{source.name}", daemon=True)
        self.source = source
        self.queue = FrameQueue(queue_size)
        self.backoff_s, self.max_backoff_s, self.max_retries = backoff_s, max_backoff_s, max_retries
        self.stop_event = stop or threading.Event()
        self.stats = CaptureStats()
        self.error: Exception | None = None  # a fatal error, re-raised by the consumer
        self.log = log or (lambda message: None)
        self._opened = False
        self._t0 = time.monotonic()

    def start(self) -> None:
        if not self.source.live:
            self.source.open()  # raise SourceError here, in the caller's thread
            self._opened = True
        self._t0 = time.monotonic()
        super().start()

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        consecutive = 0
        try:
            while not self.stop_event.is_set():
                if not self._opened:
                    try:
                        self.source.open()
                        self._opened = True
                        if self.stats.failures:
                            self.stats.reconnects += 1
                            self.log(f"{self.source.name}: reconnected")
                    except SourceError as e:
                        if not self._retry(e, consecutive):
                            break
                        consecutive += 1
                        continue
                item = self.source.read()
                if item is None:
                    if not self.source.live:
                        break  # end of file / folder: the run ends cleanly
                    self.source.close()
                    self._opened = False
                    if not self._retry(
                        SourceError(f"{self.source.name}: read failed (stream ended or lost)"), consecutive
                    ):
                        break
                    consecutive += 1
                    continue
                consecutive = 0
                image, position, media_time = item
                now = time.monotonic()
                frame = Frame(
                    self.stats.frames,
                    image,
                    media_time if media_time is not None else now - self._t0,
                    time.time(),
                    position,
                )
                self.stats.frames += 1
                self.queue.put(frame, drop_oldest=self.source.live, stop=self.stop_event)
                self.stats.dropped = self.queue.dropped
        except Exception as e:  # an unexpected error must end the run, not leave the consumer waiting forever
            self.error = e
        finally:
            self.stats.unreadable = list(getattr(self.source, "unreadable", []))
            self.source.close()
            self.queue.close()

    def _retry(self, error: SourceError, consecutive: int) -> bool:
        """Count a live failure and sleep the backoff; False when retries are exhausted (or stop was asked)."""
        self.stats.failures += 1
        self.stats.last_error = str(error)
        if self.max_retries is not None and consecutive >= self.max_retries:
            self.error = SourceError(f"{error} (gave up after {consecutive + 1} attempts)")
            return False
        delay = min(self.max_backoff_s, self.backoff_s * (2**consecutive))
        self.log(f"{error}; retrying in {delay:.1f}s")
        return not self.stop_event.wait(delay)
