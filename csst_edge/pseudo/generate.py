"""Teacher → pseudo labels for a folder / list / video of unlabelled images.

Output folder:
    labels/<name>.png     uint8 class ids, 255 = ignore (below the confidence threshold)
    soft/<name>.npz       optional top-k: `ids` uint8 [K,H,W] + `probs` uint8 [K,H,W] (probability * 255)
    manifest.jsonl        one line per finished image (manifest-<rank>.jsonl under torchrun)
    meta.json             classes, palette, teacher checkpoint + hash, settings

Resumable: an image counts as done once its manifest line exists, and its files are written atomically
*before* that line, so a killed run leaves no partial file and a rerun skips exactly the finished images.
Decoding happens in DataLoader workers and PNG/npz encoding in a thread pool, so the model stays busy.
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from csst_edge.data.pseudo_folder import manifest_files
from csst_edge.data.transforms import normalize
from csst_edge.data.unlabelled import UnlabelledItem, expand_sources, load_item
from csst_edge.errors import ConfigError, CsstError
from csst_edge.fileio import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_image,
    atomic_write_json,
    file_sha256,
    read_jsonl,
)
from csst_edge.models.checkpoint import model_from_checkpoint, normalization
from csst_edge.progress import progress_bar
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
    amp: bool = True  # fp16 autocast on CUDA
    extra: dict = field(default_factory=dict)


@dataclass
class PseudoLabelSummary:
    out_dir: Path
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
            image = load_item(self.items[i])
        except CsstError as e:  # corrupt / unreadable inputs are reported in the manifest, not fatal
            return i, None, str(e)
        raw = image if self.items[i].frame is not None else None  # video frames are saved for training
        return i, (torch.from_numpy(normalize(image, self.mean, self.std)), raw), None


def _collate(batch):
    return batch


def finished_names(out_dir: Path) -> set[str]:
    return {r["name"] for f in manifest_files(out_dir) for r in read_jsonl(f) if r.get("status") == "ok"}


def generate_pseudo_labels(
    checkpoint: str | Path,
    sources: list,
    out_dir: str | Path,
    settings: PseudoLabelSettings | None = None,
    progress: bool = True,
    console=None,
) -> PseudoLabelSummary:
    s = settings or PseudoLabelSettings()
    if s.mode not in ("single", "multiscale"):
        raise ConfigError(f"--mode must be 'single' or 'multiscale', got '{s.mode}'")
    if s.threshold is not None and not 0.0 < s.threshold < 1.0:
        raise ConfigError(f"--threshold must be between 0 and 1, got {s.threshold}")
    out_dir = Path(out_dir)
    dist, device = setup_distributed(s.device)
    model, state = model_from_checkpoint(checkpoint)
    model.to(device).eval()
    mean, std = normalization(state)
    teacher_hash = file_sha256(checkpoint)
    num_classes = int(state["num_classes"])

    items = expand_sources(sources, s.video_fps)
    done = finished_names(out_dir) if out_dir.exists() else set()
    # Shard the full list, then drop finished items: a rank's share must not depend on how far the others have
    # got, and every rank reads the manifests before any rank appends to them.
    todo = [it for it in items[dist.rank :: dist.world_size] if it.name not in done]
    barrier(dist)
    if dist.is_main:
        atomic_write_json(
            out_dir / "meta.json",
            {
                "class_names": state.get("class_names") or [str(i) for i in range(num_classes)],
                "palette": state.get("palette"),
                "ignore_index": 255,
                "teacher": str(checkpoint),
                "teacher_hash": teacher_hash,
                "settings": asdict(s),
                "sources": [str(x) for x in sources],
            },
        )
    manifest = out_dir / ("manifest.jsonl" if dist.world_size == 1 else f"manifest-{dist.rank}.jsonl")
    lock = threading.Lock()
    counts = {"ok": 0, "error": 0, "conf": 0.0}

    def write_outputs(item: UnlabelledItem, probs: np.ndarray, raw: np.ndarray | None) -> None:
        label, record = _labels_from_probs(probs, s.threshold, num_classes)
        if raw is not None and not Path(_frame_path(item, out_dir)).exists():
            atomic_write_image(_frame_path(item, out_dir), raw, [cv2.IMWRITE_JPEG_QUALITY, 95])
        rel = Path("labels") / f"{item.name}.png"
        atomic_write_image(out_dir / rel, label)
        if s.topk:
            soft_rel = Path("soft") / f"{item.name}.npz"
            atomic_write_bytes(out_dir / soft_rel, _encode_topk(probs, s.topk))
            record["soft"] = str(soft_rel)
        record.update(
            name=item.name,
            image=str(item.path) if item.frame is None else _frame_path(item, out_dir),
            label=str(rel),
            frame=item.frame,
            teacher_hash=teacher_hash,
            status="ok",
        )
        with lock:
            append_jsonl(manifest, record)
            counts["ok"] += 1
            counts["conf"] += record["mean_confidence"]

    loader = DataLoader(
        _ItemDataset(todo, mean, std), batch_size=max(1, s.batch_size), num_workers=s.workers, collate_fn=_collate
    )
    from csst_edge.evaluate.inference import predict_logits

    pool = ThreadPoolExecutor(max_workers=2)
    futures = []
    bar = progress_bar("img", console) if progress and dist.is_main else None
    try:
        if bar:
            bar.start()
            task = bar.add_task("pseudo-label", total=len(todo))
        for batch in loader:
            good = [(i, x) for i, x, err in batch if err is None]
            for i, _, err in batch:
                if err is not None:
                    with lock:
                        append_jsonl(
                            manifest,
                            {"name": todo[i].name, "image": str(todo[i].path), "status": "error", "error": err},
                        )
                        counts["error"] += 1
            for shape_group in _same_shape_groups(good):
                x = torch.stack([t for _, (t, _) in shape_group]).to(device)
                with torch.autocast(device.type, dtype=torch.float16, enabled=s.amp and device.type == "cuda"):
                    probs = predict_logits(
                        model, x, mode=s.mode, scales=s.scales, flip=s.flip, num_classes=num_classes, output="probs"
                    )
                probs = probs.float().cpu().numpy()
                for (i, (_, raw)), p in zip(shape_group, probs, strict=False):
                    futures.append(pool.submit(write_outputs, todo[i], p, raw))
            futures = [f for f in futures if not _raise_if_failed(f)]
            if bar:
                bar.update(task, advance=len(batch))
        for f in futures:
            f.result()
    finally:
        pool.shutdown(wait=True)
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
    """(ids uint8 [K,H,W], probabilities float32 [K,H,W]) from a soft-label .npz."""
    with np.load(path) as z:
        return z["ids"], z["probs"].astype(np.float32) / 255.0


def _frame_path(item: UnlabelledItem, out_dir: Path) -> str:
    return str(out_dir / "frames" / f"{item.name}.jpg")
