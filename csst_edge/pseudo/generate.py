"""Teacher → pseudo labels for a folder / list / video of unlabelled images.

Output folder (a local path or an fsspec URL such as s3://bucket/pseudo/r01):
    labels/<name>.png     uint8 class ids, 255 = ignore (below the confidence threshold)
    soft/<name>.npz       optional top-k: `ids` uint8 [K,H,W] + `probs` uint8 [K,H,W] (probability * 255)
    manifest.jsonl        one line per finished image (manifest-<rank>.jsonl under torchrun)
    meta.json             classes, palette, teacher checkpoint + hash, settings

One writer per output folder: a run holds `.pseudo.lock` in it (one per rank under torchrun; a lock object on an
object store), and a second run into the same folder is an error naming the first one's pid and host, so two runs
never label the same images twice or mix two teachers' labels.

Resumable: an image counts as done once its manifest line exists, and its files are written atomically
*before* that line, so a killed run leaves no partial file and a rerun skips exactly the finished images.
On an object store every file is one whole-object PUT and the manifest is written in whole parts
(`storage.ManifestWriter`), so the same holds there.
Decoding happens in DataLoader workers and PNG/npz encoding in a thread pool, so the model stays busy.

The per-image steps (`decode_item`, `predict_probs`, `write_item_outputs`) are shared with the Ray engine
(`csst_edge.pseudo.ray_engine`), so both engines write the same bytes for the same image.
"""

from __future__ import annotations

import hashlib
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from csst_edge import storage
from csst_edge.data.pseudo_folder import manifest_files
from csst_edge.data.transforms import normalize
from csst_edge.data.unlabelled import UnlabelledItem, expand_sources, load_item
from csst_edge.errors import CheckpointError, ConfigError, CsstError
from csst_edge.fileio import WriterLock
from csst_edge.models.checkpoint import load_checkpoint, load_checkpoint_bytes, model_from_checkpoint, normalization
from csst_edge.progress import progress_bar
from csst_edge.storage import ManifestWriter
from csst_edge.train.distributed import barrier, setup_distributed


@dataclass
class PseudoLabelSettings:
    mode: str = "single"  # single | multiscale
    scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    flip: bool = False
    threshold: float | None = None  # pixels whose top probability is below become ignore (255)
    topk: int = 0  # >0: also store top-k soft labels
    video_fps: float = 1.0
    batch_size: int = 1
    workers: int = 2
    device: str = "auto"
    # torch intra-op threads per process (None: torch's default, all cores, in the local engine; 1 per Ray CPU actor).
    # CPU kernels may round the last bit differently with another thread count, which can flip the argmax of a pixel
    # whose top two classes tie to ~1e-7; two runs with the same count write the same bytes.
    threads: int | None = None
    amp: bool = True  # fp16 autocast on CUDA
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.mode not in ("single", "multiscale"):
            raise ConfigError(f"--mode must be 'single' or 'multiscale', got '{self.mode}'")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"--threshold must be between 0 and 1, got {self.threshold}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")


@dataclass
class PseudoLabelSummary:
    out_dir: Path | str
    total: int
    done_before: int
    labelled: int
    failed: int
    mean_confidence: float | None


class _ItemDataset(Dataset):
    def __init__(self, items: list[UnlabelledItem], mean, std):
        self.items, self.mean, self.std = items, mean, std

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        try:
            return i, decode_item(self.items[i], self.mean, self.std), None
        except CsstError as e:  # corrupt / unreadable inputs are reported in the manifest, not fatal
            return i, None, str(e)


def _collate(batch):
    return batch


class OutputLockedError(CsstError):
    """Another pseudo-label run is writing the same --out folder; the message names it."""


def lock_output(out_dir, rank: int = 0, world_size: int = 1):
    """Hold `out_dir` for this run (rank): a second writer is an OutputLockedError / LockedError naming this one.
    Release it with `.release()`."""
    name = ".pseudo.lock" if world_size == 1 else f".pseudo.lock-{rank}"
    target = storage.join(out_dir, name)
    what = f"pseudo-label --out {storage.redact(out_dir)}"
    if isinstance(target, Path):
        return WriterLock(target, what, OutputLockedError)
    return storage.ObjectLock(target, what)


def finished_names(out_dir) -> set[str]:
    """Names of the finished items of an output folder (rows without a name are skipped, not an error)."""
    return {
        r["name"]
        for f in manifest_files(out_dir)
        for r in storage.read_jsonl(f)
        if r.get("status") == "ok" and isinstance(r.get("name"), str)
    }


# ------------------------------------------------------------------------------ the per-image steps (both engines)
def decode_item(item: UnlabelledItem, mean, std) -> tuple[torch.Tensor, np.ndarray | None]:
    """(normalised CHW tensor, the raw frame when the item is a video frame, else None). Raises CsstError for an
    unreadable input."""
    image = load_item(item)
    raw = image if item.frame is not None else None  # video frames are saved for training
    return torch.from_numpy(normalize(image, mean, std)), raw


def predict_probs(model, x: torch.Tensor, settings: PseudoLabelSettings, num_classes: int, device) -> np.ndarray:
    """N×C×H×W teacher probabilities (float32 numpy) of a same-sized batch, with the settings' TTA."""
    from csst_edge.evaluate.inference import predict_logits

    x = x.to(device)
    with (
        torch.no_grad(),
        torch.autocast(device.type, dtype=torch.float16, enabled=settings.amp and device.type == "cuda"),
    ):
        probs = predict_logits(
            model,
            x,
            mode=settings.mode,
            scales=settings.scales,
            flip=settings.flip,
            num_classes=num_classes,
            output="probs",
        )
    return probs.float().cpu().numpy()


def write_item_outputs(
    out_dir,
    item: UnlabelledItem,
    probs: np.ndarray,
    raw: np.ndarray | None,
    settings: PseudoLabelSettings,
    num_classes: int,
    teacher_hash: str,
) -> dict:
    """Write one image's label (and soft label, and video frame) atomically; return its manifest record, which the
    caller appends only after this returns."""
    label, record = _labels_from_probs(probs, settings.threshold, num_classes)
    frame_path = _frame_path(item, out_dir)
    if raw is not None and not storage.exists(frame_path):
        storage.write_bytes(
            frame_path, _encode(".jpg", cv2.cvtColor(raw, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        )
    rel = f"labels/{item.name}.png"
    storage.write_bytes(storage.join(out_dir, rel), _encode(".png", label))
    if settings.topk:
        soft_rel = f"soft/{item.name}.npz"
        storage.write_bytes(storage.join(out_dir, soft_rel), _encode_topk(probs, settings.topk))
        record["soft"] = soft_rel
    record.update(
        name=item.name,
        image=storage.redact(item.path) if item.frame is None else storage.redact(frame_path),
        label=rel,
        frame=item.frame,
        teacher_hash=teacher_hash,
        status="ok",
    )
    return record


def error_record(item: UnlabelledItem, error: str) -> dict:
    return {
        "name": item.name,
        "image": storage.redact(item.path),
        "status": "error",
        "error": storage.redact_text(error),
    }


def _encode(ext: str, image: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, image, params or [])
    if not ok:
        raise ValueError(f"could not encode a {ext} image")
    return buf.tobytes()


@dataclass
class PseudoRun:
    """What both engines work from: the teacher, the items still to do, and where the outputs go."""

    out_dir: Path | str
    state: dict
    teacher_hash: str
    num_classes: int
    mean: tuple
    std: tuple
    items: list[UnlabelledItem]
    done: set[str]
    checkpoint_bytes: bytes | None = None


def prepare_run(
    checkpoint, sources: list, out_dir, settings: PseudoLabelSettings, keep_bytes: bool = False
) -> PseudoRun:
    """Check the settings, read the teacher and the finished items of `out_dir`, expand the sources. With
    `keep_bytes`, the checkpoint's bytes are kept (the Ray engine ships them to its actors)."""
    settings.check()
    out_dir = storage.as_location(out_dir)
    data = None
    if keep_bytes:
        data = _checkpoint_bytes(checkpoint)
        state = load_checkpoint_bytes(data, storage.redact(checkpoint))
        teacher_hash = hashlib.sha256(data).hexdigest()[:16]
    else:
        state = load_checkpoint(checkpoint)
        teacher_hash = storage.sha256(checkpoint)
    mean, std = normalization(state)
    items = expand_sources(sources, settings.video_fps)
    done = finished_names(out_dir) if storage.exists(out_dir) else set()
    return PseudoRun(out_dir, state, teacher_hash, int(state["num_classes"]), mean, std, items, done, data)


def _checkpoint_bytes(checkpoint) -> bytes:
    location = storage.as_location(checkpoint)
    if isinstance(location, Path) and not location.is_file():
        raise CheckpointError(f"{location}: checkpoint not found")
    try:
        return storage.read_bytes(location)
    except (OSError, storage.StorageError) as e:
        raise CheckpointError(f"{storage.redact(checkpoint)}: cannot read the checkpoint ({e})") from None


def write_meta(run: PseudoRun, checkpoint, sources: list, settings: PseudoLabelSettings) -> None:
    storage.write_json(
        storage.join(run.out_dir, "meta.json"),
        {
            "class_names": run.state.get("class_names") or [str(i) for i in range(run.num_classes)],
            "palette": run.state.get("palette"),
            "ignore_index": 255,
            "teacher": storage.redact(checkpoint),
            "teacher_hash": run.teacher_hash,
            "settings": asdict(settings),
            "sources": [storage.redact(x) for x in sources],
        },
    )


# ----------------------------------------------------------------------------------------------- local engine
def generate_pseudo_labels(
    checkpoint: str | Path,
    sources: list,
    out_dir: str | Path,
    settings: PseudoLabelSettings | None = None,
    progress: bool = True,
    console=None,
) -> PseudoLabelSummary:
    settings = settings or PseudoLabelSettings()
    settings.check()
    dist, device = setup_distributed(settings.device)
    lock = lock_output(out_dir, dist.rank, dist.world_size)
    try:
        return _generate_locked(checkpoint, sources, settings, dist, device, out_dir, lock, progress, console)
    finally:
        lock.release()


def _generate_locked(
    checkpoint, sources, settings, dist, device, out_dir, out_lock, progress, console
) -> PseudoLabelSummary:
    run = prepare_run(checkpoint, sources, out_dir, settings)
    out_dir, num_classes, teacher_hash = run.out_dir, run.num_classes, run.teacher_hash
    model, _ = model_from_checkpoint(run.state)
    model.to(device).eval()
    items, done = run.items, run.done
    # Shard the full list, then drop finished items: a rank's share must not depend on how far the others have
    # got, and every rank reads the manifests before any rank appends to them.
    todo = [it for it in items[dist.rank :: dist.world_size] if it.name not in done]
    barrier(dist)
    if dist.is_main:
        write_meta(run, checkpoint, sources, settings)
    manifest = ManifestWriter(out_dir, "manifest.jsonl" if dist.world_size == 1 else f"manifest-{dist.rank}.jsonl")
    lock = threading.Lock()
    counts = {"ok": 0, "error": 0, "conf": 0.0}

    def write_outputs(item: UnlabelledItem, probs: np.ndarray, raw: np.ndarray | None) -> None:
        record = write_item_outputs(out_dir, item, probs, raw, settings, num_classes, teacher_hash)
        with lock:
            manifest.append(record)
            counts["ok"] += 1
            counts["conf"] += record["mean_confidence"]

    loader = DataLoader(
        _ItemDataset(todo, run.mean, run.std),
        batch_size=max(1, settings.batch_size),
        num_workers=settings.workers,
        collate_fn=_collate,
    )
    pool = ThreadPoolExecutor(max_workers=2)
    futures = []
    bar = progress_bar("img", console) if progress and dist.is_main else None
    threads_before = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        if bar:
            bar.start()
            task = bar.add_task("pseudo-label", total=len(todo))
        for batch in loader:
            good = [(i, x) for i, x, err in batch if err is None]
            for i, _, err in batch:
                if err is not None:
                    with lock:
                        manifest.append(error_record(todo[i], err))
                        counts["error"] += 1
            for shape_group in _same_shape_groups(good):
                x = torch.stack([t for _, (t, _) in shape_group])
                probs = predict_probs(model, x, settings, num_classes, device)
                for (i, (_, raw)), p in zip(shape_group, probs, strict=False):
                    futures.append(pool.submit(write_outputs, todo[i], p, raw))
            futures = [f for f in futures if not _raise_if_failed(f)]
            if bar:
                bar.update(task, advance=len(batch))
            if hasattr(out_lock, "refresh"):
                out_lock.refresh()
        for f in futures:
            f.result()
    finally:
        torch.set_num_threads(threads_before)
        pool.shutdown(wait=True)
        manifest.close()
        if bar:
            bar.stop()
    barrier(dist)
    labelled = counts["ok"]
    return PseudoLabelSummary(
        out_dir, len(items), len(done), labelled, counts["error"], counts["conf"] / labelled if labelled else None
    )


def _raise_if_failed(future) -> bool:
    """True when the future is finished (re-raising its error), so finished ones can be dropped."""
    if future.done():
        future.result()
        return True
    return False


def _same_shape_groups(pairs):
    groups: dict[tuple, list] = {}
    for i, t in pairs:
        groups.setdefault(tuple(t[0].shape), []).append((i, t))
    return list(groups.values())


def _labels_from_probs(probs: np.ndarray, threshold: float | None, num_classes: int) -> tuple[np.ndarray, dict]:
    """Hard label = argmax; below-threshold pixels → 255. Also the manifest statistics."""
    label = probs.argmax(0).astype(np.uint8)
    confidence = probs.max(0)
    if threshold is not None:
        label[confidence < threshold] = 255
    hist = np.bincount(label[label != 255].ravel(), minlength=num_classes)[:num_classes]
    return label, {
        "mean_confidence": round(float(confidence.mean()), 5),
        "class_histogram": hist.tolist(),
        "ignored_share": round(float((label == 255).mean()), 5),
    }


def _encode_topk(probs: np.ndarray, k: int) -> bytes:
    k = min(k, probs.shape[0])
    ids = np.argsort(-probs, axis=0)[:k]
    top = np.take_along_axis(probs, ids, axis=0)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, ids=ids.astype(np.uint8), probs=np.round(top * 255).astype(np.uint8))
    return buffer.getvalue()


def read_soft_label(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids uint8 [K,H,W], probabilities float32 [K,H,W]) from a soft-label .npz (a path or a URL)."""
    location = storage.as_location(path)
    with np.load(io.BytesIO(storage.read_bytes(location)) if isinstance(location, str) else location) as z:
        return z["ids"], z["probs"].astype(np.float32) / 255.0


def _frame_path(item: UnlabelledItem, out_dir) -> Path | str:
    return storage.join(out_dir, "frames", f"{item.name}.jpg")
