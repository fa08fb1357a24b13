"""The frame harvester: keeps the frames the next self-training round will learn most from.

Every frame gets four scores, each in [0, 1]:

- **uncertainty**: mean per-pixel entropy of the model's probabilities / log(C) (`entropy`), or the share of
  pixels whose top probability is below `confidence` (`low-confidence`). Needs a model exported with
  `--output probs` or `logits`; a labels-only model has no uncertainty and the other scores carry the decision.
- **rarity**: the rarest class the model sees in the frame (covering at least `rare_min_share` of it), weighted by
  how rare it is in the training set: w_c = log(f_max / f_c) / log(f_max / f_min) from the class pixel
  frequencies of a centroid index (`csst-edge data index`) or a JSON list. Without them, the frequencies of the
  model's own predictions so far stand in.
- **novelty**: 1 - the highest cosine similarity of the frame's descriptor (a 16x32 grey thumbnail, zero-mean,
  unit-norm) with the recently harvested frames. Above `duplicate_similarity` the frame is a near-duplicate
  (stopped at a red light) and is skipped.
- **sharpness**: variance of the Laplacian at <= 320 px width. A gate, not a score: frames below `min_sharpness`
  or below `sharpness_ratio` x the median of recent frames (motion blur, a wiper pass, focus hunting) are rejected.

score = weighted mean of the available scores. The rate limit (`rate_per_min`) is applied as best-of-window: the
first acceptable frame opens a window of 60/rate seconds (media time) and the best frame of the window is
written when it closes, so the harvest takes the most useful frame of each stretch, not the first passable one.
A disk quota evicts the lowest-scoring harvested frames first (and a new frame that would itself be the lowest is
not written).

Folder layout (directly usable as `csst-edge pseudo-label` input: it reads the images and ignores the rest):

    images/<vehicle>_<utc time>_<frame>.jpg   written atomically (temp file, fsync, rename)
    manifest.jsonl                            one line per event, appended with fsync *after* the image is in
                                              place: {"event": "harvest", ...} / {"event": "evict", ...}
    meta.json                                 classes, palette, model, settings of the latest run

A crash loses at most the frame being written: an image without its manifest line (or a leftover temp file) is
deleted when the folder is opened again, and an eviction logged before its file was deleted is completed.

The folder may be a URL (s3://bucket/fleet/car1/harvest): the harvest is then kept in a local staging folder
(`<cache>/harvest/<protocol>/<bucket>/<key>`, $CSST_CACHE) with the quota and the crash rules above, pulled from the
URL when the staging folder is new, and mirrored to it when the harvester closes (new images, then the manifest and
meta.json as whole objects, then the evicted images deleted). `csst-edge runtime sync` is the upload path made for
vehicles (content-hash names, resumable, bandwidth cap); the URL form suits a machine that is online when it stops.
`read_harvest_records` reads both a harvest folder and a synced vehicle prefix (`manifest/<sha256>.json` rows).
Torch-free.
"""

from __future__ import annotations

import math
import os
import re
import socket
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from csst_edge import storage
from csst_edge.errors import CsstError
from csst_edge.fileio import (
    WriterLock,
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    check_image_pixels,
    warn,
)
from csst_edge.runtime.model_meta import ModelMeta

MANIFEST = "manifest.jsonl"
IMAGES = "images"
SYNCED_ROWS = "manifest"  # `runtime sync`'s layout: <vehicle>/manifest/<sha256>.json, one row per item
LOCK_NAME = ".harvest.lock"  # one harvester per folder (fileio.WriterLock)
PUSHED_NAME = ".pushed.json"  # images this folder uploaded to its URL (push_harvest deletes only these)
DESCRIPTOR_SIZE = (32, 16)  # (width, height) of the novelty thumbnail
SHARPNESS_WIDTH = 320
UNCERTAINTY_MODES = ("entropy", "low-confidence")


class HarvestError(CsstError):
    """The harvest folder or a harvest option is unusable; the message names it."""


# the only files the harvester writes into images/: its frames and the temp files of their atomic writes; the
# orphan sweep deletes nothing else
_OWN_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*_\d{8}T\d{9}Z_\d{7}\.jpg$")
_OWN_TEMP = re.compile(r"^\.[A-Za-z0-9][A-Za-z0-9._-]*_\d{8}T\d{9}Z_\d{7}\.jpg\.[A-Za-z0-9_]+\.tmp$")


def harvest_image(record: dict, synced: bool = False) -> str | None:
    """A manifest row's image as a safe relative path: `images/<one name>` (a synced row: exactly
    `images/<sha256>.jpg`), or None for a row to skip (no image, an absolute path, `..`, anything else)."""
    image = record.get("image") if isinstance(record, dict) else None
    if synced:
        return image if isinstance(image, str) and storage.SYNCED_OBJECT.match(image) else None
    rel = storage.safe_relative(image)
    if rel is None or not rel.startswith(f"{IMAGES}/") or rel.count("/") != 1:
        return None
    if not isinstance(record.get("name"), str):
        return None
    return rel


@dataclass
class HarvestSettings:
    rate_per_min: float = 6.0  # at most this many frames per minute of media time; <= 0: no limit
    quota_mb: float = 2048.0  # disk quota of images/; the lowest-scoring frames are evicted first
    min_score: float = 0.25
    min_sharpness: float = 20.0  # absolute floor of the Laplacian variance
    sharpness_ratio: float = 0.4  # relative floor: this share of the median of the last `sharpness_window` frames
    sharpness_window: int = 50
    duplicate_similarity: float = 0.95
    history: int = 256  # harvested descriptors kept for the novelty score
    uncertainty: str = "entropy"  # entropy | low-confidence
    confidence: float = 0.6  # low-confidence threshold
    rare_min_share: float = 0.002  # a class counts as present from this share of the frame
    weight_uncertainty: float = 0.5
    weight_rarity: float = 0.3
    weight_novelty: float = 0.2
    jpeg_quality: int = 92
    vehicle: str = field(default_factory=lambda: _safe_name(socket.gethostname()) or "vehicle")

    def check(self) -> None:
        if not storage.is_vehicle_name(self.vehicle):
            raise HarvestError(
                f"--vehicle {self.vehicle!r}: use letters, digits, '.', '_' and '-' only (it names files and prefixes)"
            )
        if self.uncertainty not in UNCERTAINTY_MODES:
            raise HarvestError(f"--uncertainty must be one of {', '.join(UNCERTAINTY_MODES)}, got {self.uncertainty!r}")
        if self.quota_mb <= 0:
            raise HarvestError(f"--harvest-quota-mb must be > 0, got {self.quota_mb}")
        if not 0 < self.duplicate_similarity <= 1:
            raise HarvestError(f"--duplicate-similarity must be in (0, 1], got {self.duplicate_similarity}")
        if min(self.weight_uncertainty, self.weight_rarity, self.weight_novelty) < 0:
            raise HarvestError("harvest score weights must be >= 0")
        if not 1 <= self.jpeg_quality <= 100:
            raise HarvestError(f"--jpeg-quality must be in 1..100, got {self.jpeg_quality}")


@dataclass
class FrameScores:
    uncertainty: float | None
    rarity: float
    novelty: float
    sharpness: float
    score: float
    decision: str = ""  # candidate | harvested | duplicate | blurred | low-score | superseded | quota
    rare_class: int | None = None

    def to_log(self) -> dict:
        d = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        return d


# ---------------------------------------------------------------------------------------------- the scores
def entropy_uncertainty(probs: np.ndarray) -> float:
    """Mean per-pixel entropy of C x H x W probabilities, divided by log(C) (0 = certain, 1 = uniform)."""
    c = probs.shape[0]
    if c < 2:
        return 0.0
    p = np.clip(probs, 1e-8, 1.0)
    entropy = -(p * np.log(p)).sum(axis=0)
    return float(entropy.mean() / math.log(c))


def low_confidence_share(probs: np.ndarray, threshold: float) -> float:
    """Share of pixels whose top class probability is below `threshold`."""
    return float((probs.max(axis=0) < threshold).mean())


def class_weights(frequencies: np.ndarray) -> np.ndarray:
    """Rarity weight per class in [0, 1]: log(f_max / f_c) / log(f_max / f_min); unseen classes get 1."""
    f = np.asarray(frequencies, np.float64)
    total = f.sum()
    if total <= 0:
        return np.zeros_like(f)
    f = np.maximum(f / total, 1e-7)
    spread = math.log(f.max() / f.min())
    if spread <= 0:
        return np.zeros_like(f)
    return np.log(f.max() / f) / spread


def rarity_score(shares: np.ndarray, weights: np.ndarray, min_share: float) -> tuple[float, int | None]:
    """(weight of the rarest class present, that class) — 0 when only common classes are present."""
    present = np.flatnonzero(shares[: len(weights)] >= min_share)
    if present.size == 0:
        return 0.0, None
    best = present[np.argmax(weights[present])]
    return float(weights[best]), int(best)


def frame_descriptor(image: np.ndarray) -> np.ndarray:
    """16x32 grey thumbnail, zero-mean, unit-norm (flattened float32): cheap, and robust to noise and exposure."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    thumb = cv2.resize(grey, DESCRIPTOR_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    thumb -= thumb.mean()
    norm = float(np.linalg.norm(thumb))
    return thumb / norm if norm > 1e-6 else thumb


class DescriptorHistory:
    """The last `size` harvested frames' descriptors as rows of one matrix (a ring): a new frame's similarity to
    all of them is one matrix-vector product, not a Python loop over 256 dot products on every frame."""

    def __init__(self, size: int, dim: int = DESCRIPTOR_SIZE[0] * DESCRIPTOR_SIZE[1]):
        self.rows = np.zeros((max(0, size), dim), np.float32)
        self.count = 0  # descriptors appended so far; the ring holds the last len(self) of them

    def __len__(self) -> int:
        return min(self.count, len(self.rows))

    def append(self, descriptor: np.ndarray) -> None:
        if len(self.rows):
            self.rows[self.count % len(self.rows)] = descriptor
            self.count += 1

    def max_similarity(self, descriptor: np.ndarray) -> float:
        """Largest dot product with a remembered descriptor (cosine: both are unit-norm); 0 when empty."""
        n = len(self)
        return float((self.rows[:n] @ descriptor).max()) if n else 0.0


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image at <= 320 px width (resolution-independent threshold)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    if grey.shape[1] > SHARPNESS_WIDTH:
        h = max(1, round(grey.shape[0] * SHARPNESS_WIDTH / grey.shape[1]))
        grey = cv2.resize(grey, (SHARPNESS_WIDTH, h), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def load_class_frequencies(path: str | os.PathLike, num_classes: int) -> np.ndarray:
    """Per-class pixel counts from a centroid index (.npz, `csst-edge data index`) or JSON (a list, or a dict with
    `class_frequencies` / `pixels_per_class`). Read with numpy only: the vehicle needs no cc3d or torch."""
    path = Path(path)
    if not path.is_file():
        raise HarvestError(f"{path}: --class-stats file not found")
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                freq = np.asarray(z["histograms"], np.float64).reshape(-1, int(z["num_classes"])).sum(0)
        else:
            import json

            raw = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(raw, dict):
                raw = raw.get("class_frequencies", raw.get("pixels_per_class"))
            freq = np.asarray(raw, np.float64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise HarvestError(f"{path}: not a centroid index (.npz) or class-frequency JSON ({e})") from None
    if freq.ndim != 1 or freq.size != num_classes:
        raise HarvestError(f"{path}: has {freq.size} class frequencies, the model has {num_classes} classes")
    return freq


# ------------------------------------------------------------------------------------------------ harvester
@dataclass
class HarvestEntry:
    name: str
    image: str  # relative to the harvest folder
    score: float
    bytes: int
    shares: list[float] | None = None


@dataclass
class _Candidate:
    frame: object  # sources.Frame
    scores: FrameScores
    descriptor: np.ndarray
    shares: np.ndarray


class Harvester:
    """Scores frames (`consider`) and writes the chosen ones into `folder`. Call `close()` at the end (it writes
    the frame still waiting for its rate-limit window to close)."""

    def __init__(
        self,
        folder: str | os.PathLike,
        meta: ModelMeta,
        settings: HarvestSettings | None = None,
        model_file: str | None = None,
        model_hash: str | None = None,
        source_name: str = "",
        class_frequencies: np.ndarray | None = None,
    ):
        self.url = None if storage.local_path(folder) is not None else storage.as_location(folder)
        self.folder = storage.local_path(folder) or staging_folder(self.url)
        self.settings = settings or HarvestSettings()
        self.settings.check()
        self.meta = meta
        # a URL source (rtsp://user:pw@cam/...) is kept only redacted: it is written to meta.json and every row
        self.model_file, self.model_hash, self.source_name = model_file, model_hash, storage.redact(source_name)
        self.fixed_weights = class_frequencies is not None
        self.weights = class_weights(class_frequencies) if class_frequencies is not None else np.zeros(meta.num_classes)
        self._seen_shares = np.zeros(meta.num_classes, np.float64)  # fallback frequencies: the model's predictions
        self.quota_bytes = int(self.settings.quota_mb * 2**20)
        self.entries: dict[str, HarvestEntry] = {}
        self.history = DescriptorHistory(self.settings.history)
        self.recent_sharpness: deque[float] = deque(maxlen=self.settings.sharpness_window)
        self.pending: _Candidate | None = None
        self.window_end: float | None = None
        self.counts = {
            k: 0
            for k in ("considered", "harvested", "duplicate", "blurred", "low-score", "superseded", "quota", "evicted")
        }
        self.recovered = {"orphans_deleted": 0, "evictions_completed": 0}
        self._open_folder()

    # ------------------------------------------------------------------ folder state
    @property
    def manifest(self) -> Path:
        return self.folder / MANIFEST

    @property
    def total_bytes(self) -> int:
        return sum(e.bytes for e in self.entries.values())

    def _open_folder(self) -> None:
        if self.url is not None and not self.manifest.is_file():
            pull_harvest(self.url, self.folder)  # a new staging folder continues the harvest already at the URL
        if self.folder.is_dir() and not (self.folder / "meta.json").is_file() and not self.manifest.is_file():
            others = [p.name for p in self.folder.iterdir() if p.name != LOCK_NAME]
            if others:  # someone's photos, not a harvest: the sweep below would delete them
                raise HarvestError(
                    f"{self.folder}: not a harvest folder (no meta.json or {MANIFEST}) and not empty "
                    f"({len(others)} entries); give an empty or new folder"
                )
        try:
            (self.folder / IMAGES).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HarvestError(f"{self.folder}: cannot create the harvest folder ({e.strerror})") from None
        self.lock = WriterLock(self.folder / LOCK_NAME, f"harvest folder {self.folder}", HarvestError)
        skipped: Counter = Counter()
        rows = storage.read_jsonl(self.manifest, skipped)
        self.entries = _live_entries(self.folder, rows, skipped)
        self.recovered["rows_skipped"] = sum(skipped.values())  # torn lines, rows naming foreign images
        evicted = {r.get("name") for r in rows if r.get("event") == "evict"}
        known = {e.image for e in self.entries.values()}
        for path in sorted((self.folder / IMAGES).iterdir()):
            rel = f"{IMAGES}/{path.name}"
            if rel in known or not (_OWN_IMAGE.match(path.name) or _OWN_TEMP.match(path.name)) or not path.is_file():
                continue  # only names the harvester itself writes are ever deleted
            # a temp file of an interrupted write, an image whose manifest line never made it, or an evicted
            # image whose deletion was interrupted: none of them is part of the harvest
            if Path(path.name).stem in evicted:
                self.recovered["evictions_completed"] += 1
            else:
                self.recovered["orphans_deleted"] += 1
            path.unlink(missing_ok=True)
        for entry in list(self.entries.values())[-self.settings.history :]:
            grey = _read_grey(self.folder / entry.image)
            if grey is not None:
                self.history.append(frame_descriptor(grey))
        atomic_write_json(
            self.folder / "meta.json",
            {
                "class_names": self.meta.class_names,
                "palette": self.meta.palette,
                "num_classes": self.meta.num_classes,
                "model": self.model_file,
                "model_sha256": self.model_hash,
                "checkpoint_sha256": self.meta.checkpoint_sha256,
                "vehicle": self.settings.vehicle,
                "source": self.source_name,
                "settings": asdict(self.settings),
                "updated": _utc(time.time()),
            },
        )

    # ------------------------------------------------------------------ scoring
    def score(self, image: np.ndarray, prediction) -> tuple[FrameScores, np.ndarray, np.ndarray]:
        """(scores, descriptor, class shares) of one frame; `image` is the model-sized input, `prediction` a
        postprocess.Prediction."""
        settings = self.settings
        probs = prediction.small_probs()
        uncertainty = None
        if probs is not None:
            uncertainty = (
                entropy_uncertainty(probs)
                if settings.uncertainty == "entropy"
                else low_confidence_share(probs, settings.confidence)
            )
        shares = prediction.class_shares()
        if not self.fixed_weights:
            self._seen_shares += shares
            self.weights = class_weights(self._seen_shares)
        rarity, rare_class = rarity_score(shares, self.weights, settings.rare_min_share)
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image  # once, for both
        descriptor = frame_descriptor(grey)
        similarity = self.history.max_similarity(descriptor)
        novelty = float(np.clip(1.0 - similarity, 0.0, 1.0))
        sharp = sharpness(grey)
        parts = [(settings.weight_rarity, rarity), (settings.weight_novelty, novelty)]
        if uncertainty is not None:
            parts.append((settings.weight_uncertainty, uncertainty))
        total_weight = sum(w for w, _ in parts)
        score = sum(w * v for w, v in parts) / total_weight if total_weight > 0 else 0.0
        scores = FrameScores(uncertainty, rarity, novelty, sharp, float(score), rare_class=rare_class)
        if similarity >= settings.duplicate_similarity:
            scores.decision = "duplicate"
        elif self._blurred(sharp):
            scores.decision = "blurred"
        elif score < settings.min_score:
            scores.decision = "low-score"
        else:
            scores.decision = "candidate"
        self.recent_sharpness.append(sharp)
        return scores, descriptor, shares

    def _blurred(self, value: float) -> bool:
        settings = self.settings
        if value < settings.min_sharpness:
            return True
        if len(self.recent_sharpness) >= 5:  # the relative floor needs a few frames of context
            return value < settings.sharpness_ratio * float(np.median(self.recent_sharpness))
        return False

    def consider(self, frame, image: np.ndarray, prediction) -> FrameScores:
        """Score a frame and harvest it if it is the best of its rate-limit window. `frame` is a sources.Frame
        (the original-resolution image is what gets saved), `image` the model-sized input."""
        self.counts["considered"] += 1
        t = float(frame.time)
        if self.pending is not None and self.window_end is not None and t >= self.window_end:
            self._commit_pending()
        if self.window_end is not None and t < self.window_end - self._window_s() - 1e-9:
            self.window_end = None  # media time went backwards (a new file): start afresh
        scores, descriptor, shares = self.score(image, prediction)
        if scores.decision != "candidate":
            self.counts[scores.decision] += 1
            return scores
        window = self._window_s()
        if window <= 0:
            self.pending = _Candidate(frame, scores, descriptor, shares)
            self._commit_pending()
            return scores
        if self.pending is None:
            if self.window_end is None or t >= self.window_end:
                self.window_end = t + window
            self.pending = _Candidate(frame, scores, descriptor, shares)
        elif scores.score > self.pending.scores.score:
            self.pending.scores.decision = "superseded"
            self.counts["superseded"] += 1
            self.pending = _Candidate(frame, scores, descriptor, shares)
        else:
            scores.decision = "superseded"
            self.counts["superseded"] += 1
        return scores

    def _window_s(self) -> float:
        rate = self.settings.rate_per_min
        return 60.0 / rate if rate > 0 else 0.0

    def close(self) -> None:
        """Write the frame waiting for its window (a clean stop keeps it); mirror a URL harvest to its URL."""
        if self.pending is not None:
            self._commit_pending()
        if self.url is not None:
            push_harvest(self.folder, self.url, self.entries)
        self.lock.release()

    # ------------------------------------------------------------------ writing
    def _commit_pending(self) -> None:
        cand, self.pending = self.pending, None
        if cand is None:
            return
        settings = self.settings
        frame = cand.frame
        ok, buf = cv2.imencode(
            ".jpg", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality]
        )
        if not ok:
            raise HarvestError(f"{self.folder}: OpenCV could not encode a JPEG")
        data = buf.tobytes()
        if not self._make_room(len(data), cand.scores.score):
            cand.scores.decision = "quota"
            self.counts["quota"] += 1
            return
        name = f"{settings.vehicle}_{_utc(frame.wall, compact=True)}_{frame.index:07d}"
        rel = f"{IMAGES}/{name}.jpg"
        atomic_write_bytes(self.folder / rel, data)  # the image is complete on disk before the manifest names it
        record = {
            "event": "harvest",
            "name": name,
            "image": rel,
            "source": self.source_name,
            "position": frame.position,
            "frame": frame.index,
            "media_time": round(frame.time, 3),
            "time": _utc(frame.wall),
            "wall": round(frame.wall, 3),
            "size": [int(frame.image.shape[0]), int(frame.image.shape[1])],
            "bytes": len(data),
            "score": round(cand.scores.score, 5),
            "scores": {k: v for k, v in cand.scores.to_log().items() if k not in ("score", "decision")},
            "class_shares": [round(float(v), 4) for v in cand.shares],
            "vehicle": settings.vehicle,
            "model": self.model_file,
            "model_sha256": self.model_hash,
            "checkpoint_sha256": self.meta.checkpoint_sha256,
        }
        append_jsonl(self.manifest, record)
        cand.scores.decision = "harvested"
        self.entries[name] = HarvestEntry(name, rel, cand.scores.score, len(data), record["class_shares"])
        self.history.append(cand.descriptor)
        self.counts["harvested"] += 1

    def _make_room(self, nbytes: int, score: float) -> bool:
        """Evict the lowest-scoring frames until `nbytes` fit in the quota; False (nothing evicted) when the new
        frame would itself be the one to go."""
        total = self.total_bytes
        if total + nbytes <= self.quota_bytes:
            return True
        if nbytes > self.quota_bytes:
            return False
        ranked = sorted(self.entries.values(), key=lambda e: e.score)
        freed, victims = 0, []
        for entry in ranked:
            if total - freed + nbytes <= self.quota_bytes:
                break
            if entry.score >= score:
                return False
            victims.append(entry)
            freed += entry.bytes
        if total - freed + nbytes > self.quota_bytes:
            return False
        for entry in victims:
            # log first, delete second: a crash in between leaves a file that the next open deletes
            append_jsonl(
                self.manifest,
                {
                    "event": "evict",
                    "name": entry.name,
                    "image": entry.image,
                    "score": round(entry.score, 5),
                    "time": _utc(time.time()),
                    "reason": "quota",
                },
            )
            (self.folder / entry.image).unlink(missing_ok=True)
            del self.entries[entry.name]
            self.counts["evicted"] += 1
        return True

    # ------------------------------------------------------------------ reporting
    def summary(self) -> dict:
        """Counts, size, and composition (mean class shares, frames containing each class) of the harvest."""
        names = self.meta.class_names
        shares = np.array([e.shares for e in self.entries.values() if e.shares], np.float64)
        composition, frames_with = {}, {}
        if shares.size:
            mean = shares.mean(0)
            present = (shares >= self.settings.rare_min_share).sum(0)
            composition = {names[i] if i < len(names) else str(i): round(float(v), 4) for i, v in enumerate(mean)}
            frames_with = {names[i] if i < len(names) else str(i): int(v) for i, v in enumerate(present)}
        return {
            "folder": storage.redact(self.url) if self.url is not None else str(self.folder),
            "frames": len(self.entries),
            "bytes": self.total_bytes,
            "counts": dict(self.counts),
            "recovered": dict(self.recovered),
            "mean_class_shares": composition,
            "frames_with_class": frames_with,
        }


def read_harvest_entries(folder, skipped: Counter | None = None) -> dict[str, HarvestEntry]:
    """The frames currently in a harvest folder (a path or a URL), from its manifest (harvest events minus
    evictions), in order. A line that does not parse (torn by a crash) and a row whose image is not
    `images/<name>` (no image, `..`, an absolute path) are skipped, counted in `skipped` and warned about."""
    folder = storage.as_location(folder)
    return _live_entries(folder, storage.read_jsonl(storage.join(folder, MANIFEST), skipped), skipped)


def _live_entries(folder, rows: list[dict], skipped: Counter | None) -> dict[str, HarvestEntry]:
    if isinstance(folder, Path):
        present = lambda rel: storage.inside(folder, rel) is not None and (folder / rel).is_file()  # noqa: E731
    else:
        listed = set(storage.find(storage.join(folder, IMAGES)))  # one listing, not a request per frame
        present = lambda rel: storage.join(folder, rel) in listed  # noqa: E731
    entries: dict[str, HarvestEntry] = {}
    unsafe = 0
    for r in rows:
        if r.get("event") == "harvest":
            if harvest_image(r) is None:
                unsafe += 1  # never followed: not a name the harvester writes
            elif present(r["image"]):
                entries[r["name"]] = HarvestEntry(
                    r["name"], r["image"], _number(r.get("score")), int(_number(r.get("bytes"))), r.get("class_shares")
                )
        elif r.get("event") == "evict":
            entries.pop(r.get("name"), None)
    if unsafe:
        if skipped is not None:
            skipped["unsafe row"] += unsafe
        warn(
            f"{storage.redact(folder)}/{MANIFEST}: skipped {unsafe} row(s) whose image is not images/<name> "
            "(missing, an absolute path or '..'): never read, uploaded or deleted"
        )
    return entries


def _number(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def harvest_layout(folder) -> str | None:
    """ "harvest" (a harvest folder: manifest.jsonl), "synced" (a `runtime sync` vehicle prefix: manifest/*.json
    rows) or None."""
    if storage.isfile(storage.join(folder, MANIFEST)):
        return "harvest"
    if storage.isdir(storage.join(folder, SYNCED_ROWS)):
        return "synced"
    return None


def read_harvest_records(folder, skipped: Counter | None = None) -> list[dict]:
    """Full manifest records of the frames currently in a harvest folder or a synced vehicle prefix (a path or a
    URL), for `csst-edge round`; `image` is relative to `folder`. Rows that are skipped (torn lines, images that are
    not the harvester's or sync's own names) are counted in `skipped`."""
    if harvest_layout(folder) == "synced":
        return read_synced_rows(folder, skipped)
    folder = storage.as_location(folder)
    rows = storage.read_jsonl(storage.join(folder, MANIFEST), skipped)
    live = _live_entries(folder, rows, skipped)
    records = {}
    for r in rows:
        if r.get("event") == "harvest" and harvest_image(r) is not None and r.get("name") in live:
            records[r["name"]] = r
    return list(records.values())


def read_synced_rows(prefix, skipped: Counter | None = None) -> list[dict]:
    """The rows `runtime sync` wrote under <prefix>/manifest/ (one JSON object per item, written only once its
    image is confirmed), oldest first. Only `manifest/<sha256>.json` objects whose row names exactly
    `images/<the same sha256>.jpg` count: any other key or image (a path out of the prefix) is skipped, counted in
    `skipped` and warned about, never followed."""
    import json

    rows, bad = [], 0
    for location in storage.find(storage.join(prefix, SYNCED_ROWS)):
        rel = storage.relative_to(location, prefix)
        if not storage.SYNCED_OBJECT.match(rel):
            bad += 1
            continue
        try:
            row = json.loads(storage.read_text(location))
        except (ValueError, UnicodeDecodeError):
            bad += 1
            continue
        sha = rel.rsplit("/", 1)[-1].removesuffix(".json")
        if isinstance(row, dict) and row.get("image") == f"{IMAGES}/{sha}.jpg" and isinstance(row.get("name"), str):
            rows.append(row)
        else:
            bad += 1
    if bad:
        if skipped is not None:
            skipped["unsafe row"] += bad
        warn(f"{storage.redact(prefix)}: skipped {bad} object(s) under {SYNCED_ROWS}/ that are not `runtime sync` rows")
    return sorted(rows, key=lambda r: (_number(r.get("wall")), str(r.get("name", ""))))


# ------------------------------------------------------------------------------------------- URL harvests
def staging_folder(url: str) -> Path:
    """The local folder a URL harvest is kept in."""
    return storage.cache_root() / "harvest" / storage.cache_path(url).relative_to(storage.cache_root() / "objects")


def pull_harvest(url: str, folder: Path) -> int:
    """Copy the harvest at `url` (manifest, meta.json, images) into an empty local `folder`; returns the number of
    images. Nothing at the URL: nothing to do."""
    listing = storage.find(url, detail=True)
    wanted = [
        loc
        for loc in listing
        if storage.relative_to(loc, url) in (MANIFEST, "meta.json")
        or storage.relative_to(loc, url).startswith(f"{IMAGES}/")
    ]
    if not any(storage.name_of(loc) == MANIFEST for loc in wanted):
        return 0
    unsafe = [loc for loc in wanted if storage.safe_relative(storage.relative_to(loc, url)) is None]
    if unsafe:  # keys such as images/../../x, kept as written by the store: never fetched
        warn(f"{storage.redact(url)}: skipped {len(unsafe)} object(s) whose key leaves the harvest (e.g. '..')")
    wanted = [loc for loc in wanted if loc not in unsafe]
    for loc, cached in zip(wanted, storage.cache_files(wanted, listing), strict=True):
        target = folder / storage.relative_to(loc, url)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, cached.read_bytes())
    return sum(1 for loc in wanted if storage.relative_to(loc, url).startswith(f"{IMAGES}/"))


def push_harvest(folder: Path, url: str, entries: dict[str, HarvestEntry]) -> dict:
    """Mirror a local harvest folder to `url`: images the URL lacks, then manifest.jsonl and meta.json (whole
    objects), then the images evicted since deleted. A reader of the URL always finds every listed image."""
    import json

    remote = {storage.relative_to(loc, url) for loc in storage.find(url)}
    wanted = {e.image for e in entries.values() if storage.inside(folder, e.image) is not None}
    record = folder / PUSHED_NAME  # what this folder uploaded: the only images it may delete at the URL
    pushed = set(json.loads(record.read_text())) if record.is_file() else set()
    uploaded = 0
    for rel in sorted(wanted - remote):
        storage.upload(folder / rel, storage.join(url, rel))
        pushed.add(rel)
        uploaded += 1
    atomic_write_json(record, sorted(pushed))
    for name in (MANIFEST, "meta.json"):
        if (folder / name).is_file():
            storage.upload(folder / name, storage.join(url, name))
    stale = sorted(rel for rel in remote if rel.startswith(f"{IMAGES}/") and rel not in wanted and rel in pushed)
    for rel in stale:
        storage.remove(storage.join(url, rel))
    atomic_write_json(record, sorted(pushed - set(stale)))
    return {"uploaded": uploaded, "deleted": len(stale)}


def _read_grey(path: Path) -> np.ndarray | None:
    """A harvested frame at a quarter of its size in grey, or None when it is unreadable or over the pixel limit
    (checked from its header: a frame pulled from a URL is data like any other)."""
    try:
        data = path.read_bytes()
        check_image_pixels(data, str(path))
    except (OSError, ValueError):
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_4)


def _utc(t: float, compact: bool = False) -> str:
    stamp = time.gmtime(t)
    ms = int((t - math.floor(t)) * 1000)
    if compact:
        return time.strftime("%Y%m%dT%H%M%S", stamp) + f"{ms:03d}Z"
    return time.strftime("%Y-%m-%dT%H:%M:%S", stamp) + f".{ms:03d}Z"


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-" else "-" for c in text).strip("-")[:40]
