"""Verify an exported ONNX model: `onnx.checker`, then ONNX Runtime against PyTorch on real or synthetic frames.

Two numbers, both with their thresholds in the report:
- max |Δ| between ORT and PyTorch outputs (logits, or probabilities), allowed `atol · max(1, max |logit|)` for
  logits (float32 reassociation error grows with the magnitude of the values) and half that for probabilities
  (softmax moves a probability by at most half the largest logit change);
- argmax agreement: the fraction of pixels whose class is the same, at least `min_agreement` (a pixel whose two
  best logits are within float error of each other may flip, so 100% is not required).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from csst_edge.export.deploy import DeployWrapper
from csst_edge.export.errors import ExportError
from csst_edge.models.checkpoint import model_from_checkpoint
from csst_edge.runtime.model_meta import ModelMeta, ModelMetaError, from_metadata_props

DEFAULT_ATOL = 1e-3
DEFAULT_MIN_AGREEMENT = 0.999


@dataclass
class VerifyReport:
    path: str
    frames: int
    output_kind: str
    max_abs_diff: float | None  # None for a labels model (no float output to compare)
    mean_abs_diff: float | None
    diff_threshold: float | None
    agreement: float
    min_agreement: float
    passed: bool
    providers: list[str] = field(default_factory=list)
    sizes: list[list[int]] = field(default_factory=list)

    def summary(self) -> str:
        what = {"logits": "logit", "probs": "prob"}.get(self.output_kind, "")
        parts = [f"verified on {self.frames} frame(s)"]
        if self.max_abs_diff is not None:
            parts.append(f"max |Δ{what}| {self.max_abs_diff:.2e} (limit {self.diff_threshold:.2e})")
        parts.append(f"argmax agreement {100 * self.agreement:.3f}% (limit {100 * self.min_agreement:.2f}%)")
        parts.append("ok" if self.passed else "FAILED")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)


def load_onnx_checked(onnx_path: str | os.PathLike):
    """`onnx.load` + `onnx.checker`, with errors that name the file. Returns the ModelProto."""
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise ExportError(f"{path}: ONNX file not found")
    try:
        proto = onnx.load(str(path))
    except Exception as e:
        raise ExportError(f"{path}: not a readable ONNX model ({type(e).__name__}: {str(e).strip()[:200]})") from None
    try:
        onnx.checker.check_model(str(path))  # by path: works for models with external data and > 2 GiB
    except Exception as e:
        raise ExportError(f"{path}: fails onnx.checker: {str(e).strip().splitlines()[0][:300]}") from None
    return proto


def onnx_meta(proto, path) -> ModelMeta:
    try:
        return from_metadata_props({p.key: p.value for p in proto.metadata_props}, str(path))
    except ModelMetaError as e:
        raise ExportError(str(e)) from None


def verify_onnx(
    onnx_path: str | os.PathLike,
    model_or_checkpoint: nn.Module | str | os.PathLike | dict,
    frames: Sequence[np.ndarray],
    atol: float = DEFAULT_ATOL,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    providers: Sequence[str] | str | None = ("cpu",),
    raise_on_failure: bool = True,
    source_name: str | None = None,
    device: str = "cpu",
) -> VerifyReport:
    """Compare the ONNX model with the PyTorch model on `frames` (uint8 RGB H x W x 3).

    `model_or_checkpoint` is the raw network (it takes normalised input; mean/std come from the ONNX metadata)
    or a checkpoint path / dict. Frames are resized to a static model's input size; a dynamic model runs each
    frame at its own size. Raises ExportError when a threshold is missed (unless `raise_on_failure=False`).
    `device`: where the PyTorch reference runs (auto, cpu, cuda ...); a model moved there goes back to the CPU.
    """
    from csst_edge.export.deploy import torch_device
    from csst_edge.export.frames import resize_frame
    from csst_edge.runtime.backends import OnnxRuntimeBackend

    path = Path(onnx_path)
    name = source_name or str(path)
    proto = load_onnx_checked(path)
    meta = onnx_meta(proto, name)
    del proto
    if not frames:
        raise ExportError(f"{name}: verification needs at least one frame")
    if isinstance(model_or_checkpoint, nn.Module):
        model = model_or_checkpoint
    else:
        model, _ = model_from_checkpoint(model_or_checkpoint)
    dev = torch_device(device)
    reference = DeployWrapper(model.eval(), meta.mean, meta.std, "nhwc", "logits").eval().to(dev)
    try:
        backend = OnnxRuntimeBackend(path, providers=providers, meta=meta)
    except Exception as e:
        raise ExportError(f"{name}: onnxruntime cannot run it: {e}") from None

    max_diff, sum_diff, count, scale = 0.0, 0.0, 0, 0.0
    agree, pixels = 0, 0
    sizes = []
    for frame in frames:
        frame = np.asarray(frame, dtype=np.uint8)
        if not meta.dynamic:
            frame = resize_frame(frame, meta.input_height, meta.input_width)
        batch = np.repeat(frame[None], meta.batch or 1, axis=0)
        sizes.append(list(frame.shape[:2]))
        try:
            out = backend.infer(batch)
        except Exception as e:
            backend.close()
            hint = (
                (
                    " (a dynamic export only works if no layer bakes the export size into the graph, e.g. the "
                    "input size as a constant into the graph: export such a model at a fixed size)"
                )
                if meta.dynamic
                else ""
            )
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise ExportError(
                f"{name}: onnxruntime fails on a {frame.shape[0]}x{frame.shape[1]} frame: {first}{hint}"
            ) from None
        with torch.no_grad():
            ref_logits = reference(torch.from_numpy(batch).to(dev)).float().cpu()
        ref_labels = ref_logits.argmax(1).numpy()
        if meta.output_kind == "labels":
            labels = out.astype(np.int64)
        else:
            ref = ref_logits if meta.output_kind == "logits" else ref_logits.softmax(1)
            ref = ref.numpy()
            if out.shape != ref.shape:
                raise ExportError(f"{name}: ONNX output shape {out.shape} differs from PyTorch's {ref.shape}")
            diff = np.abs(out.astype(np.float64) - ref)
            max_diff = max(max_diff, float(diff.max()))
            sum_diff += float(diff.sum())
            count += diff.size
            scale = max(scale, float(ref_logits.abs().max()))
            labels = out.argmax(1)
        if labels.shape != ref_labels.shape:
            raise ExportError(f"{name}: ONNX label shape {labels.shape} differs from PyTorch's {ref_labels.shape}")
        agree += int((labels == ref_labels).sum())
        pixels += labels.size
    backend.close()
    if dev.type != "cpu":
        model.cpu()

    agreement = agree / max(1, pixels)
    if meta.output_kind == "labels":
        max_abs = mean_abs = threshold = None
        passed = agreement >= min_agreement
    else:
        # softmax is 1/2-Lipschitz (each probability moves at most half the largest logit change), so the bound
        # that the logits are held to carries over to probabilities halved, relative to the same logit scale
        threshold = atol * max(1.0, scale) * (1.0 if meta.output_kind == "logits" else 0.5)
        max_abs, mean_abs = max_diff, sum_diff / max(1, count)
        passed = max_abs <= threshold and agreement >= min_agreement
    report = VerifyReport(
        name,
        len(frames),
        meta.output_kind,
        max_abs,
        mean_abs,
        threshold,
        agreement,
        min_agreement,
        passed,
        list(backend.providers),
        sizes,
    )
    if not passed and raise_on_failure:
        raise ExportError(f"{name}: ONNX Runtime disagrees with PyTorch: {report.summary()}")
    return report
