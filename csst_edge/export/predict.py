"""Run a trained model on images, a folder, a list file, a video or a camera: label PNGs, colour maps, overlays.

    summary = predict("runs/student/best.pt", "street.jpg", "predictions")       # PyTorch checkpoint
    summary = predict("student.onnx", "drive.mp4", "predictions")                # ONNX Runtime (or a .engine)

Nothing here is a new copy of what the project already does. A frame is fitted to the model with the runtime's
`fit_frame` (resize or letterbox) and its labels mapped back with `labels_to_frame`. An exported model runs on the
runtime's backends (`open_backend`, `Prediction`), a checkpoint through the evaluation's path (`normalize`, as
`EvalDataset` does, then `predict_logits`), so a `.pt` and its `.onnx` give the same labels. Overlays are the
runtime's `blend_overlay`, overlay videos its `OverlayVideoWriter`; image collections are listed by the
pseudo-labeller's `expand_sources` (names like `seq01/000123`), videos and cameras opened by the runtime's
`open_source`. Torch is imported only for a checkpoint: with an exported model this runs on the vehicle's
torch-free install.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from csst_edge.errors import ConfigError, CsstError
from csst_edge.runtime.model_meta import ModelMeta

SAVE_KINDS = ("labels", "color", "overlay")
CHECKPOINT_SUFFIXES = (".pt", ".pth")
TORCH_BACKEND = "torch"


@dataclass
class PredictSettings:
    # what to write: labels (class-id PNGs), color (palette PNGs), overlay (JPEGs over the image, or one video for
    # a video / camera source); None: labels + overlay for images, the overlay video for a stream
    save: tuple[str, ...] | None = None
    size: tuple[int, int] | None = None  # model input; default: the frame's (checkpoint), the export size (dynamic)
    fit: str = "resize"  # resize | letterbox (runtime.preprocess)
    backend: str | None = None  # torch (checkpoint) | ort-trt, ort-cuda, ort-cpu (ONNX, a preference list) | trt
    device: str = "auto"  # checkpoint: auto, cpu, cuda ...; exported model: cpu / cuda pick ort-cpu / ort-cuda
    threads: int | None = None  # CPU threads (torch or ONNX Runtime)
    scales: tuple[float, ...] = (1.0,)  # checkpoint only: multi-scale test-time augmentation
    flip: bool = False  # checkpoint only: flip test-time augmentation
    alpha: float = 0.5  # overlay opacity
    video_fps: float | None = None  # frame rate of an overlay video (default: the source's, else 15)
    max_frames: int | None = None


@dataclass
class PredictSummary:
    model: str
    backend: str
    source: str
    out: str
    frames: int
    seconds: float
    fps: float  # end to end: decode, inference, writing
    infer_ms_mean: float
    class_shares: dict[str, float]  # share of all predicted pixels, per class name
    written: dict[str, int]  # files per kind (labels, color, overlay images)
    overlay_video: str | None = None
    failed: list[str] = field(default_factory=list)  # unreadable inputs, skipped
    stopped_by: str = "end"  # end | max-frames | signal

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------ predictors
class CheckpointPredictor:
    """A `.pt` through the evaluation's path: `normalize` (data.transforms), `predict_logits`, argmax."""

    def __init__(self, checkpoint: str | os.PathLike, settings: PredictSettings):
        import torch

        from csst_edge.data.transforms import normalize
        from csst_edge.evaluate.inference import predict_logits
        from csst_edge.export.deploy import torch_device
        from csst_edge.export.onnx_export import meta_from_checkpoint
        from csst_edge.models.checkpoint import model_from_checkpoint, normalization

        self.torch, self._normalize, self._predict_logits = torch, normalize, predict_logits
        self.device = torch_device(settings.device)
        if settings.threads:
            torch.set_num_threads(int(settings.threads))
        model, state = model_from_checkpoint(checkpoint)
        self.model = model.to(self.device).eval()
        self.mean, self.std = normalization(state)
        h, w = settings.size or (0, 0)
        # the export's metadata (class names, palette) without an export: one description for every model kind
        self.meta = meta_from_checkpoint(state, h, w, 1, settings.size is None, "nhwc", "labels", 17, None)
        self.meta.checkpoint = Path(checkpoint).name
        self.size, self.scales, self.flip = settings.size, tuple(settings.scales), settings.flip
        self.mode = "single" if self.scales == (1.0,) else "multiscale"
        self.name = f"torch ({self.device})"

    def input_size(self, frame_hw: tuple[int, int]) -> tuple[int, int]:
        return tuple(self.size) if self.size else tuple(frame_hw)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Model-sized RGB uint8 → class ids H x W uint8 at the model size."""
        x = self.torch.from_numpy(self._normalize(image, self.mean, self.std))[None].to(self.device)
        logits = self._predict_logits(
            self.model, x, mode=self.mode, scales=self.scales, flip=self.flip, num_classes=self.meta.num_classes
        )
        return logits.argmax(1)[0].to(self.torch.uint8).cpu().numpy()

    def close(self) -> None:
        pass


class BackendPredictor:
    """An `.onnx` or `.engine` on the runtime's backend, opened as `runtime run` opens it."""

    def __init__(self, model_path: str | os.PathLike, settings: PredictSettings):
        from csst_edge.runtime.backends import backend_providers
        from csst_edge.runtime.loop import RuntimeSettings, open_backend

        backend = settings.backend
        if backend is None and settings.device != "auto":
            backend = (
                "ort-cpu"
                if settings.device == "cpu"
                else "ort-cuda"
                if settings.device.startswith("cuda")
                else settings.device
            )
        providers = backend_providers(model_path, backend)
        self.backend = open_backend(model_path, RuntimeSettings(providers=providers, threads=settings.threads))
        self.meta: ModelMeta = self.backend.meta
        self.name = self.backend.name
        m = self.meta
        if not m.dynamic:
            static = (m.input_height, m.input_width)
            if settings.size is not None and tuple(settings.size) != static:
                raise ConfigError(
                    f"--size: {Path(model_path).name} takes {static[0]}x{static[1]} frames (a static export); "
                    "--size applies to a checkpoint or a --dynamic export"
                )
            self.size = static
        else:
            self.size = tuple(settings.size) if settings.size else (m.export_height, m.export_width)

    def input_size(self, frame_hw: tuple[int, int]) -> tuple[int, int]:
        return self.size

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from csst_edge.runtime.postprocess import Prediction

        batch = image[None] if (self.meta.batch or 1) == 1 else np.repeat(image[None], self.meta.batch, axis=0)
        return Prediction(self.backend.infer(batch)[0], self.meta).labels()

    def close(self) -> None:
        self.backend.close()


def open_predictor(model: str | os.PathLike, settings: PredictSettings):
    """The predictor for a model file, after checking that the options fit its kind."""
    from csst_edge.runtime.backends import ENGINE_SUFFIXES, ONNX_SUFFIXES

    suffix = Path(str(model)).suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        if settings.backend not in (None, TORCH_BACKEND):
            raise ConfigError(
                f"--backend {settings.backend}: a checkpoint runs on {TORCH_BACKEND}; export it "
                "(`csst-edge export onnx`) to run it on ONNX Runtime or TensorRT"
            )
        return CheckpointPredictor(model, settings)
    if suffix in ONNX_SUFFIXES + ENGINE_SUFFIXES:
        if settings.backend == TORCH_BACKEND:
            raise ConfigError(f"--backend {TORCH_BACKEND} runs a checkpoint (.pt), not {Path(model).name}")
        if tuple(settings.scales) != (1.0,) or settings.flip:
            raise ConfigError("--scales / --flip: test-time augmentation runs on a checkpoint (.pt) only")
        return BackendPredictor(model, settings)
    raise ConfigError(
        f"{model}: unknown model type {suffix!r} (a checkpoint .pt, an ONNX model .onnx or a TensorRT engine .engine)"
    )


# ---------------------------------------------------------------------------------------------------- frames
@dataclass
class _Frames:
    """What a source gives: (name, RGB image or None, error or None) per frame; `stream` for a video / camera."""

    name: str
    stream: bool
    total: int | None
    fps: float
    stem: str
    items: Iterator[tuple[str, np.ndarray | None, str | None]]
    close: Callable[[], None] = lambda: None


def is_stream(spec: str) -> bool:
    """A video file, camera, stream URL or GStreamer pipeline (decoded in order) rather than images."""
    from csst_edge.data.imageio import is_video_file
    from csst_edge.runtime.sources import URL_SCHEMES

    text = str(spec).strip()
    if "!" in text or text.startswith(("csi://", "/dev/video")) or text.isdigit():
        return True
    if urlparse(text).scheme.lower() in URL_SCHEMES:
        return True
    return Path(text).is_file() and is_video_file(text)


def open_frames(spec: str | os.PathLike) -> _Frames:
    text = str(spec).strip()
    return _stream_frames(text) if is_stream(text) else _image_frames(text)


def _image_frames(text: str) -> _Frames:
    """An image, a folder (recursive) or a list file, listed as pseudo-label lists them (videos inside: every
    frame, named <video>/f000123)."""
    from csst_edge import storage
    from csst_edge.data.unlabelled import expand_sources, load_item

    items = expand_sources([text], video_fps=0)

    def frames():
        for item in items:
            try:
                yield item.name, load_item(item), None
            except CsstError as e:
                yield item.name, None, str(e)

    return _Frames(storage.redact(text), False, len(items), 0.0, Path(text).stem, frames())


def _stream_frames(text: str) -> _Frames:
    import cv2

    from csst_edge.runtime.sources import open_source

    source = open_source(text)
    source.open()
    cap = getattr(source, "cap", None)
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap is not None and source.kind == "file" else 0
    if text.isdigit():
        stem = f"camera{text}"
    elif source.kind == "file" or text.startswith("/dev/"):
        stem = Path(text).stem
    else:
        stem = "stream"

    def frames():
        n = 0
        while (item := source.read()) is not None:
            yield f"{stem}/f{n:06d}", item[0], None
            n += 1

    return _Frames(
        source.name, True, total or None, float(getattr(source, "fps", 0.0) or 0.0), stem, frames(), source.close
    )


# ------------------------------------------------------------------------------------------------------- run
def resolve_save(save, stream: bool) -> tuple[str, ...]:
    if save is None:
        return ("overlay",) if stream else ("labels", "overlay")
    kinds = tuple(dict.fromkeys(k.strip().lower() for k in save if k.strip()))
    unknown = [k for k in kinds if k not in SAVE_KINDS]
    if unknown or not kinds:
        raise ConfigError(f"--save: '{','.join(unknown) or ''}' is not one of {', '.join(SAVE_KINDS)}")
    return kinds


def predict(
    model: str | os.PathLike,
    source: str | os.PathLike,
    out: str | os.PathLike,
    settings: PredictSettings | None = None,
    on_start: Callable[[int | None], None] | None = None,
    on_frame: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> PredictSummary:
    """Predict every frame of `source` with `model` and write what `settings.save` asks for under `out`:
    `labels/<name>.png` (class ids, what `eval` and the trainer read), `color/<name>.png` (the palette),
    `overlay/<name>.jpg` or, for a video / camera, `overlay/<stem>.mp4`; then `predict.json` (the summary).

    `on_start(total frames or None)` and `on_frame(name)` drive a progress bar; `stop` (or Ctrl-C / SIGTERM in
    the main thread) ends a camera run cleanly, the overlay video finalised.
    """
    from csst_edge.fileio import atomic_write_image, atomic_write_json
    from csst_edge.runtime.loop import OverlayVideoWriter, stop_on_signals
    from csst_edge.runtime.overlay import blend_overlay, colorize, palette_lut
    from csst_edge.runtime.postprocess import Prediction
    from csst_edge.runtime.preprocess import FIT_MODES, FrameFit, fit_frame, labels_to_frame

    settings = settings or PredictSettings()
    if settings.fit not in FIT_MODES:
        raise ConfigError(f"--fit must be one of {', '.join(FIT_MODES)}, got {settings.fit!r}")
    if not 0.0 <= settings.alpha <= 1.0:
        raise ConfigError(f"--alpha must be in [0, 1], got {settings.alpha}")
    if settings.max_frames is not None and settings.max_frames < 1:
        raise ConfigError(f"--max-frames must be at least 1, got {settings.max_frames}")
    stop = stop or threading.Event()
    out = Path(out)
    frames = open_frames(source)
    save = resolve_save(settings.save, frames.stream)
    predictor = None
    writer = None
    try:
        predictor = open_predictor(model, settings)
        meta = predictor.meta
        n_classes = meta.num_classes
        lut = palette_lut(meta.palette, n_classes)
        labels_meta = dataclasses.replace(meta, output_kind="labels")  # frame-sized labels for the video writer
        folders = {k: out / k for k in save}
        written = {k: 0 for k in save if not (k == "overlay" and frames.stream)}
        video_path = out / "overlay" / f"{frames.stem}.mp4" if frames.stream and "overlay" in save else None
        counts = np.zeros(n_classes, np.int64)
        infer_s, done, failed, stopped_by = 0.0, 0, [], "end"
        total = (
            frames.total
            if settings.max_frames is None or frames.total is None
            else min(frames.total, settings.max_frames)
        )
        if on_start is not None:
            on_start(total)
        t_start = time.perf_counter()
        with stop_on_signals(stop):
            for name, image, error in frames.items:
                if stop.is_set():
                    stopped_by = "signal"
                    break
                if error is not None:
                    failed.append(error)
                else:
                    fit = fit_frame(image, *predictor.input_size(image.shape[:2]), settings.fit)
                    t0 = time.perf_counter()
                    model_labels = predictor(fit.image)
                    infer_s += time.perf_counter() - t0
                    labels = labels_to_frame(model_labels, fit)
                    counts += np.bincount(labels.ravel(), minlength=n_classes)[:n_classes]
                    if "labels" in save:
                        atomic_write_image(_out_path(folders["labels"], name, ".png"), labels)
                    if "color" in save:
                        atomic_write_image(_out_path(folders["color"], name, ".png"), colorize(labels, lut))
                    if video_path is not None:
                        if writer is None:
                            fps = settings.video_fps or frames.fps or 15.0
                            writer = OverlayVideoWriter(video_path, fps, lut, settings.alpha)
                            writer.start()
                        h, w = labels.shape
                        writer.submit(image, Prediction(labels, labels_meta), FrameFit(image, h, w, 0, 0, h, w), [])
                    elif "overlay" in save:
                        overlay = blend_overlay(image, labels, lut, settings.alpha)
                        atomic_write_image(_out_path(folders["overlay"], name, ".jpg"), overlay)
                    for kind in written:
                        written[kind] += 1
                    done += 1
                if on_frame is not None:
                    on_frame(name)
                if settings.max_frames is not None and done >= settings.max_frames:
                    stopped_by = "max-frames"
                    break
        if writer is not None:
            writer.close()
            if writer.error is not None:
                raise writer.error
            writer = None
        elapsed = time.perf_counter() - t_start
    finally:
        if writer is not None:
            writer.close()
        if predictor is not None:
            predictor.close()
        frames.close()
    pixels = max(1, int(counts.sum()))
    summary = PredictSummary(
        model=str(model),
        backend=predictor.name,
        source=frames.name,
        out=str(out),
        frames=done,
        seconds=round(elapsed, 3),
        fps=round(done / elapsed, 2) if elapsed > 0 else 0.0,
        infer_ms_mean=round(1000 * infer_s / max(1, done), 2),
        class_shares={name: round(float(c) / pixels, 5) for name, c in zip(meta.class_names, counts, strict=False)},
        written=written,
        overlay_video=str(video_path) if video_path is not None and done else None,
        failed=failed,
        stopped_by=stopped_by,
    )
    atomic_write_json(out / "predict.json", summary.to_dict())
    return summary


def _out_path(folder: Path, name: str, suffix: str) -> Path:
    """folder/<name><suffix>; a name that would lead outside the folder ('../x' in a list file) is an error."""
    root = folder.resolve()
    path = (root / f"{name}{suffix}").resolve()
    if not path.is_relative_to(root):
        raise CsstError(f"{name}: input name leads outside the output folder {folder}")
    return path
