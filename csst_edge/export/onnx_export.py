"""Checkpoint → ONNX with normalisation (and optionally softmax or argmax) inside the graph, metadata in
`metadata_props`, optional onnxslim simplification, and a verification against PyTorch on every export.

    result = export_onnx("runs/student/best.pt", "student.onnx", height=512, width=1024, output="labels")

The graph takes uint8 RGB frames (NHWC by default: what a decoder gives, no transpose on the vehicle) and
returns logits (float N x C x H x W), probabilities, or uint8 class ids N x H x W.
"""

from __future__ import annotations

import io
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from csst_edge import __version__
from csst_edge.export.deploy import DeployWrapper
from csst_edge.export.errors import ExportError
from csst_edge.export.frames import load_frames
from csst_edge.export.verify import verify_onnx
from csst_edge.fileio import atomic_write_bytes, file_sha256
from csst_edge.models.checkpoint import load_checkpoint, model_from_checkpoint, normalization
from csst_edge.runtime.model_meta import ModelMeta, set_onnx_metadata

INPUT_NAME = "image"


@dataclass
class ExportResult:
    path: Path
    meta: ModelMeta
    size_bytes: int
    seconds: float
    simplified: bool
    verification: Any = None  # VerifyReport, or None when verification was switched off
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        s = f"{self.path} ({self.size_bytes / 2**20:.1f} MiB, {self.meta.arch}, "
        s += f"{self.meta.input_layout} uint8 → {self.meta.output_kind}"
        s += (
            ", dynamic"
            if self.meta.dynamic
            else f", {self.meta.batch}x{self.meta.input_height}x{self.meta.input_width}"
        )
        s += f") in {self.seconds:.1f}s"
        if self.verification is not None:
            s += "; " + self.verification.summary()
        return s


def meta_from_checkpoint(
    state: dict,
    height: int,
    width: int,
    batch: int,
    dynamic: bool,
    input_layout: str,
    output: str,
    opset: int,
    checkpoint_path: str | os.PathLike | None,
) -> ModelMeta:
    mean, std = normalization(state)
    n = int(state["num_classes"])
    names = list(state.get("class_names") or [f"class{i}" for i in range(n)])
    palette = [list(map(int, c)) for c in (state.get("palette") or [])] or _default_palette(n)
    config = state.get("config") or {}
    ignore = config.get("ignore_index", 255) if isinstance(config, dict) else 255
    return ModelMeta(
        arch=str(state["arch"]),
        num_classes=n,
        class_names=names,
        palette=palette,
        mean=[float(v) for v in mean],
        std=[float(v) for v in std],
        input_height=None if dynamic else int(height),
        input_width=None if dynamic else int(width),
        batch=None if dynamic else int(batch),
        dynamic=bool(dynamic),
        input_layout=input_layout,
        input_name=INPUT_NAME,
        output_kind=output,
        output_name=output,
        precision="fp32",
        checkpoint_sha256=file_sha256(checkpoint_path, 64) if checkpoint_path else None,
        checkpoint=Path(checkpoint_path).name if checkpoint_path else None,
        version=__version__,
        opset=int(opset),
        export_height=int(height),
        export_width=int(width),
        ignore_index=int(ignore) if isinstance(ignore, int) else 255,
        extra={
            "checkpoint_version": state.get("version"),
            "epoch": state.get("epoch"),
            "model_kwargs": dict(state.get("model_kwargs") or {}),
        },
    )


def _default_palette(n: int) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, 3)).tolist()


def export_onnx(
    checkpoint: str | os.PathLike | dict,
    out_path: str | os.PathLike,
    height: int,
    width: int,
    batch: int = 1,
    dynamic: bool = False,
    opset: int = 17,
    input_layout: str = "nhwc",
    output: str = "logits",
    simplify: bool = True,
    verify: bool = True,
    verify_images: str | os.PathLike | list | None = None,
    verify_count: int = 4,
    atol: float | None = None,
    min_agreement: float | None = None,
    verify_device: str = "cpu",
) -> ExportResult:
    """Export a checkpoint (path or loaded dict) to ONNX and verify it against PyTorch.

    `verify_images`: a dataset YAML, image folder or list of frames (default: synthetic frames). A failed
    verification raises ExportError and leaves no file at `out_path`. A bad checkpoint raises CheckpointError.
    `verify_device`: where the verification runs (cpu, cuda, auto): the PyTorch reference, and ONNX Runtime's
    CUDA provider when the device is a GPU and this onnxruntime has it.
    """
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    model, state = model_from_checkpoint(state)
    ckpt_path = None if isinstance(checkpoint, dict) else checkpoint
    meta = meta_from_checkpoint(state, height, width, batch, dynamic, input_layout, output, opset, ckpt_path)
    return export_model_onnx(
        model,
        meta,
        out_path,
        simplify=simplify,
        verify=verify,
        verify_images=verify_images,
        verify_count=verify_count,
        atol=atol,
        min_agreement=min_agreement,
        verify_device=verify_device,
    )


def export_model_onnx(
    model: nn.Module,
    meta: ModelMeta,
    out_path: str | os.PathLike,
    simplify: bool = True,
    verify: bool = True,
    verify_images=None,
    verify_count: int = 4,
    atol: float | None = None,
    min_agreement: float | None = None,
    verify_device: str = "cpu",
) -> ExportResult:
    """Export an in-memory model described by `meta` (the checkpoint-free path used by benchmarks and tests)."""
    t0 = time.perf_counter()
    out_path = Path(out_path)
    h, w = meta.export_height or meta.input_height, meta.export_width or meta.input_width
    if not h or not w or h < 8 or w < 8:
        raise ExportError(f"export size must be at least 8x8, got {h}x{w}")
    model = model.eval().cpu()
    wrapper = DeployWrapper(model, meta.mean, meta.std, meta.input_layout, meta.output_kind).eval()
    batch = meta.batch or 1
    dummy = torch.zeros(meta.input_shape(batch, h, w), dtype=torch.uint8)
    proto = _trace_to_onnx(wrapper, dummy, meta)
    notes = []
    simplified = False
    if simplify:
        proto, simplified, note = _simplify(proto)
        if note:
            notes.append(note)
    set_onnx_metadata(proto, meta)
    _check_proto(proto, out_path)
    data = proto.SerializeToString()
    report = None
    if verify:
        # verify from a temp file first: a model that fails verification never appears at out_path
        tmp = out_path.with_name(f".{out_path.name}.verify.onnx")
        atomic_write_bytes(tmp, data)
        try:
            frames = load_frames(verify_images, verify_count, h, w)
            if meta.dynamic:  # a dynamic graph must also be right at a size it was not traced at
                h2, w2 = _second_size(h, w)
                frames += load_frames(verify_images, max(1, verify_count // 2), h2, w2, seed=1)
            kwargs = {k: v for k, v in (("atol", atol), ("min_agreement", min_agreement)) if v is not None}
            report = verify_onnx(
                tmp,
                model,
                frames,
                source_name=str(out_path),
                device=verify_device,
                providers=_verify_providers(verify_device),
                **kwargs,
            )
        finally:
            tmp.unlink(missing_ok=True)
    atomic_write_bytes(out_path, data)
    return ExportResult(out_path, meta, len(data), time.perf_counter() - t0, simplified, report, notes)


def _verify_providers(device: str) -> tuple[str, ...]:
    """ONNX Runtime's CUDA provider for a GPU verification when this onnxruntime has it, else the CPU."""
    from csst_edge.export.deploy import torch_device
    from csst_edge.runtime.backends import available_providers

    if torch_device(device).type == "cuda" and "CUDAExecutionProvider" in available_providers():
        return ("ort-cuda",)
    return ("ort-cpu",)


def _second_size(h: int, w: int) -> tuple[int, int]:
    """1.5x the export size, rounded to a multiple of 32 (every output stride of the models divides it)."""
    return max(32, round(h * 1.5 / 32) * 32), max(32, round(w * 1.5 / 32) * 32)


def _trace_to_onnx(wrapper: nn.Module, dummy: torch.Tensor, meta: ModelMeta):
    import onnx

    dynamic_axes = None
    if meta.dynamic:
        in_axes = (
            {0: "batch", 1: "height", 2: "width"}
            if meta.input_layout == "nhwc"
            else {0: "batch", 2: "height", 3: "width"}
        )
        out_axes = (
            {0: "batch", 1: "height", 2: "width"}
            if meta.output_kind == "labels"
            else {0: "batch", 2: "height", 3: "width"}
        )
        dynamic_axes = {meta.input_name: in_axes, meta.output_name: out_axes}
    buffer = io.BytesIO()
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation + tracer warnings
            torch.onnx.export(
                wrapper,
                (dummy,),
                buffer,
                dynamo=False,
                opset_version=int(meta.opset or 17),
                input_names=[meta.input_name],
                output_names=[meta.output_name],
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
    except Exception as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise ExportError(
            f"torch.onnx.export failed for arch '{meta.arch}' at {dummy.shape[1:]}: {type(e).__name__}: {first}"
        ) from e
    return onnx.load_from_string(buffer.getvalue())


def _simplify(proto):
    """onnxslim (constant folding, dead-node removal, fusions) when importable; the model is kept as exported
    if it is absent or fails, with a note saying so."""
    try:
        import onnxslim
    except ImportError:
        return proto, False, "onnxslim is not installed: exported without simplification"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slim = onnxslim.slim(proto)
    except Exception as e:
        return proto, False, f"onnxslim failed ({type(e).__name__}: {str(e)[:160]}): exported without simplification"
    if slim is None:
        return proto, False, "onnxslim returned nothing: exported without simplification"
    return slim, True, None


def _check_proto(proto, out_path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(proto)
    except Exception as e:
        raise ExportError(
            f"{out_path}: the exported graph fails onnx.checker: {str(e).splitlines()[0][:300]}"
        ) from None
