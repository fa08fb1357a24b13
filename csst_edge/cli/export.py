"""`csst-edge export`: ONNX (+ verification), ONNX Runtime INT8, TensorRT engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csst_edge.cli.common import EvalLimit, OldBatch, command_group, console, fail, out_option, renamed
from csst_edge.sizes import parse_hw

app = command_group(
    "Export a checkpoint for the vehicle: ONNX (verified against PyTorch), INT8 with ONNX Runtime, TensorRT engine."
)

QuietResult = Annotated[bool, typer.Option("--quiet", "-q", help="No spinner and no notes: the result line only.")]


def _default_out(src: Path, suffix: str) -> Path:
    return src.with_name(src.stem + suffix)


_HELP = {  # help texts too long to stand on their option's line, by parameter name
    # export onnx
    "head": "What the graph returns: logits, probs (softmax in the graph; what `runtime run --harvest` "
    "scores) or labels (uint8 argmax in the graph).",
    "verify": "Compare ONNX Runtime with PyTorch after export (fails the export on a mismatch).",
    "verify_data": "Frames for verification: dataset YAML, image folder (default: synthetic).",
    "device": "Where the verification runs (PyTorch and ONNX Runtime): cpu, cuda, auto.",
    # export int8
    "calibration": "Calibration frames: dataset YAML / built-in name, or an image folder.",
    "for_tensorrt": "S8S8, symmetric, per-channel QDQ: what TensorRT's explicit INT8 wants.",
    "per_channel": "Per-channel weight scales (depthwise convs need them: lraspp_lite0 loses 5.9 mIoU without).",
    "fold_normalization": "Fold the input normalisation into the first conv (ORT runs it slowly in an INT8 graph).",
    "max_drop": "Automatic float fallback: keep the most sensitive nodes in float until the mIoU drop is at "
    "most this many points (needs --data).",
    "pre_process": "Run onnxruntime's quant_pre_process (shape inference, fusion) first.",
    "op_types": "Only quantise these op types, comma-separated (e.g. Conv,MatMul).",
    "latency_runs": "Timed runs of FP32 and INT8 each on this machine (0: skip the comparison).",
    # export tensorrt
    "int8": "INT8 from the model's Q/DQ nodes (export int8 --for-tensorrt).",
    "min_shape": "Dynamic models: smallest input shape, e.g. 1x256x512x3.",
    "timing_cache": "Timing cache file: read if present, updated after the build.",
    "build_device": "GPU to build on: cuda or cuda:N (the engine is tuned for that GPU).",
}

# the old spelling, hidden: it still works, with a deprecation line (--batch: common.OldBatch)
OldOutput = Annotated[str | None, typer.Option("--output", hidden=True, help="Deprecated: --head.")]


@app.command("onnx")
def onnx_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt) written by `csst-edge train`.")],
    out: Annotated[Path | None, out_option("Output .onnx (default: next to the checkpoint).")] = None,
    size: Annotated[str, typer.Option(help="Input HEIGHTxWIDTH the graph is built (and verified) at.")] = "512x1024",
    batch_size: Annotated[int, typer.Option(help="Batch size of the static input.")] = 1,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic batch/height/width axes.")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    layout: Annotated[str, typer.Option(help="Input layout of the uint8 frames: nhwc (as decoded) or nchw.")] = "nhwc",
    head: Annotated[str, typer.Option(help=_HELP["head"])] = "labels",
    simplify: Annotated[bool, typer.Option(help="Simplify with onnxslim when installed.")] = True,
    verify: Annotated[bool, typer.Option(help=_HELP["verify"])] = True,
    verify_data: Annotated[str | None, typer.Option(help=_HELP["verify_data"])] = None,
    verify_count: Annotated[int, typer.Option(help="Number of verification frames.")] = 4,
    device: Annotated[str, typer.Option(help=_HELP["device"])] = "cpu",
    quiet: QuietResult = False,
    old_output: OldOutput = None,
    old_batch: OldBatch = None,
) -> None:
    """Export a checkpoint to ONNX with normalisation (and argmax) inside, then verify it.

    Examples:

      csst-edge export onnx runs/student/best.pt --size 720x960 --head labels

      csst-edge export onnx best.pt -o student.onnx --size 512x1024 --head probs --verify-data camvid

      csst-edge export onnx best.pt --dynamic --layout nchw     # any batch / size
    """
    from csst_edge.export.onnx_export import export_onnx

    head = _head(renamed(head, old_output, "--head", "--output", default="labels"))
    batch = renamed(batch_size, old_batch, "--batch-size", "--batch", default=1)
    h, w = parse_hw(size, "--size")
    out = out or _default_out(checkpoint, f"_{h}x{w}.onnx" if not dynamic else ".onnx")
    with _status(quiet, f"exporting {checkpoint} → {out}"):
        result = export_onnx(
            checkpoint,
            out,
            h,
            w,
            batch=batch,
            dynamic=dynamic,
            opset=opset,
            input_layout=layout,
            output=head,
            simplify=simplify,
            verify=verify,
            verify_images=verify_data,
            verify_count=verify_count,
            verify_device=device,
        )
    _notes(result.notes, quiet)
    console.print(f"[green]exported[/] {result.summary()}")


def _head(head: str) -> str:
    if head not in ("logits", "probs", "labels"):
        fail(f"--head must be logits, probs or labels, got '{head}'")
    return head


class _NoStatus:
    """What `-q` uses instead of a spinner: a context manager whose `.update(text)` does nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, *args, **kwargs) -> None:
        pass


def _status(quiet: bool, text: str):
    return _NoStatus() if quiet else console.status(text)


def _notes(notes: list[str], quiet: bool) -> None:
    if not quiet:
        for note in notes:
            console.print(f"[yellow]note:[/] {note}")


@app.command("int8")
def int8_command(
    model: Annotated[Path, typer.Argument(help="FP32 .onnx from `csst-edge export onnx`.")],
    calibration: Annotated[str, typer.Option(help=_HELP["calibration"])],
    out: Annotated[Path | None, out_option("Output .onnx (default: MODEL_int8.onnx).")] = None,
    calibration_split: Annotated[str, typer.Option(help="Split of a calibration dataset.")] = "train",
    count: Annotated[int, typer.Option(help="Number of calibration frames.")] = 64,
    quant_format: Annotated[str, typer.Option("--format", help="QDQ or QOperator.")] = "QDQ",
    types: Annotated[str, typer.Option(help="U8S8 (uint8 activations, int8 weights) or S8S8.")] = "U8S8",
    per_channel: Annotated[bool, typer.Option(help=_HELP["per_channel"])] = True,
    fold_normalization: Annotated[bool, typer.Option(help=_HELP["fold_normalization"])] = True,
    method: Annotated[str, typer.Option(help="Calibration: minmax, entropy or percentile.")] = "minmax",
    for_tensorrt: Annotated[bool, typer.Option("--for-tensorrt", help=_HELP["for_tensorrt"])] = False,
    exclude: Annotated[list[str] | None, typer.Option(help="Node name to keep in float (repeatable).")] = None,
    data: Annotated[str | None, typer.Option(help="Eval dataset YAML: report FP32 vs INT8 mIoU.")] = None,
    split: Annotated[str, typer.Option(help="Split of the eval dataset.")] = "val",
    limit: EvalLimit = None,
    max_drop: Annotated[float | None, typer.Option(help=_HELP["max_drop"])] = None,
    threads: Annotated[int | None, typer.Option(help="onnxruntime threads.")] = None,
    pre_process: Annotated[bool, typer.Option(help=_HELP["pre_process"])] = False,
    op_types: Annotated[str | None, typer.Option(help=_HELP["op_types"])] = None,
    latency_runs: Annotated[int, typer.Option(help=_HELP["latency_runs"])] = 10,
    quiet: QuietResult = False,
) -> None:
    """Quantise an exported model to INT8 with ONNX Runtime (static, calibrated), then time FP32 against INT8 on
    this machine (same threads) and say plainly when INT8 is not faster here.

    Examples:

      csst-edge export int8 student.onnx --calibration camvid --count 64

      csst-edge export int8 student.onnx --calibration camvid --data camvid --max-drop 1.0   # ≤ 1 mIoU point lost

      csst-edge export int8 student.onnx --calibration frames/ --for-tensorrt -o student_qdq.onnx
    """
    from csst_edge.export.evaluation import onnx_eval_fn
    from csst_edge.export.frames import load_frames
    from csst_edge.runtime.model_meta import read_onnx_metadata

    if max_drop is not None and data is None:
        fail("--max-drop measures the mIoU drop: give an eval set with --data")
    meta = read_onnx_metadata(model)
    h, w = meta.input_height or meta.export_height, meta.input_width or meta.export_width
    out = out or _default_out(model, "_int8.onnx")
    if for_tensorrt:  # what TensorRT's explicit INT8 wants, whatever the other options say
        # symmetric int8 activations would spend a bit on the raw 0..255 pixels: keep the normalisation unfolded
        quant_format, types, per_channel, fold_normalization = "QDQ", "S8S8", True, False
    with _status(quiet, f"loading {count} calibration frame(s) from {calibration}"):
        frames = load_frames(calibration, count, h, w, split=calibration_split)
    eval_fn = onnx_eval_fn(data, split, limit, threads) if data else None
    result = _quantize(locals(), frames, eval_fn)
    _notes(result.notes, quiet)
    if result.auto_excluded:
        console.print(f"kept in float by the fallback: {', '.join(result.auto_excluded)}")
    console.print(f"[green]quantised[/] {result.summary()}")
    if latency_runs > 0:
        _compare_latency(model, out, frames, threads, latency_runs, quiet)


def _quantize(params: dict, frames, eval_fn):
    """quantize_int8 with the command's options, its progress messages on the spinner."""
    from csst_edge.export.quantize import quantize_int8

    p = params
    op_types = tuple(t.strip() for t in p["op_types"].split(",") if t.strip()) if p["op_types"] else None
    with _status(p["quiet"], "quantising") as status:
        return quantize_int8(
            p["model"],
            p["out"],
            frames,
            quant_format=p["quant_format"],
            types=p["types"],
            per_channel=p["per_channel"],
            nodes_to_exclude=p["exclude"] or (),
            calibrate_method=p["method"],
            auto_fallback_max_drop=None if p["max_drop"] is None else p["max_drop"] / 100.0,
            eval_fn=eval_fn,
            symmetric_activations=p["for_tensorrt"],
            threads=p["threads"],
            log=lambda msg: status.update(msg),
            pre_process=p["pre_process"],
            fold_normalization=p["fold_normalization"],
            op_types_to_quantize=op_types,
        )


def _compare_latency(model: Path, out: Path, frames, threads: int | None, runs: int, quiet: bool) -> None:
    """FP32 against INT8 on this machine, with the same threads; a plain verdict when INT8 is not faster here."""
    from csst_edge.export.quantize import compare_latency

    with _status(quiet, f"timing FP32 and INT8, {runs} runs each"):
        timing = compare_latency(model, out, frames, threads=threads, runs=runs)
    style = "green" if timing.speedup >= 1.05 else "yellow"
    console.print(
        f"latency on this machine ({threads or 'default'} threads, median of {timing.runs}): FP32 "
        f"{timing.fp32_ms:.1f} ms, INT8 {timing.int8_ms:.1f} ms: [{style}]{timing.verdict}[/]"
    )


@app.command("tensorrt")
def tensorrt_command(
    model: Annotated[Path, typer.Argument(help=".onnx from `csst-edge export onnx` (or a QDQ model for --int8).")],
    out: Annotated[Path | None, out_option("Output engine (default: MODEL.engine).")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Allow FP16 kernels.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help=_HELP["int8"])] = False,
    min_shape: Annotated[str | None, typer.Option(help=_HELP["min_shape"])] = None,
    opt_shape: Annotated[str | None, typer.Option(help="Dynamic models: shape to tune for.")] = None,
    max_shape: Annotated[str | None, typer.Option(help="Dynamic models: largest input shape.")] = None,
    workspace: Annotated[float, typer.Option(help="Builder workspace in GiB.")] = 2.0,
    timing_cache: Annotated[Path | None, typer.Option(help=_HELP["timing_cache"])] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="TensorRT builder log.")] = False,
    device: Annotated[str, typer.Option(help=_HELP["build_device"])] = "cuda",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No spinner; only the result line.")] = False,
) -> None:
    """Build a TensorRT engine (run this on the target device: engines are GPU- and version-specific).

    Examples:

      csst-edge export tensorrt student.onnx --fp16 --timing-cache ~/.cache/csst/trt.cache

      csst-edge export tensorrt student_qdq.onnx --int8 --fp16

      csst-edge export tensorrt dyn.onnx --min-shape 1x256x512x3 --opt-shape 1x512x1024x3 --max-shape 2x1024x2048x3
    """
    from csst_edge.export.tensorrt_build import build_engine

    _select_gpu(device)
    out = out or model.with_suffix(".engine")
    with _status(quiet, f"building {out} (minutes on a Jetson)"):
        result = build_engine(
            model,
            out,
            fp16=fp16,
            int8=int8,
            min_shape=min_shape,
            opt_shape=opt_shape,
            max_shape=max_shape,
            workspace_gib=workspace,
            timing_cache=timing_cache,
            verbose=verbose,
        )
    console.print(f"[green]built[/] {result.summary()}")


def _select_gpu(device: str) -> None:
    """`--device cuda:N` → only GPU N is visible to this process (TensorRT builds on the current CUDA device, and
    nothing has touched CUDA yet when the command starts)."""
    import os
    import re

    match = re.fullmatch(r"cuda(?::(\d+))?", device.strip().lower())
    if match is None:
        fail(f"--device: a TensorRT engine is built on a GPU: give cuda or cuda:N, not '{device}'")
    if match.group(1) is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = match.group(1)
