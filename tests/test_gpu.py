"""CUDA paths: AMP (fp16 / bf16) and channels_last training, torch.compile training, CUDA vs CPU evaluation and
forward-pass parity, ONNX Runtime CUDA provider vs CPU provider.

Every test here needs a CUDA GPU and is skipped (before any fixture runs) when `torch.cuda.is_available()` is
false. Run them on a GPU machine with `python3 -m pytest -q -m gpu tests/test_gpu.py` or `bash
benchmarks/gpu_check.sh` (which also runs benchmarks/gpu_speed.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_tiny_dataset

CUDA = torch.cuda.is_available()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not CUDA, reason="no CUDA GPU (torch.cuda.is_available() is False)"),
]

STUDENTS = ("fastscnn", "bisenet_r18", "icnet_r18")


@pytest.fixture(autouse=True)
def no_tf32():
    """Exact fp32 on Ampere and later: TF32 convolutions / matmuls would make CUDA-vs-CPU parity a 1e-3 affair."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _cfg(data_yaml: Path, out: Path, *extra: str):
    from csst_edge.train.config import load_train_config

    return load_train_config(
        None,
        [
            f"train=[{{data: '{data_yaml}', split: train}}]",
            f"val={{data: '{data_yaml}', split: val}}",
            "model=fastscnn",
            "epochs=2",
            "batch_size=2",
            "samples_per_epoch=8",  # 4 iterations per epoch, every batch full (no odd last batch)
            "crop=[32,32]",
            "workers=0",
            "device=cuda",
            f"out={out}",
            "augment.blur=0",
            "optim.lr=0.01",
            "log_every=1",
            *extra,
        ],
    )


def _metrics(run: Path) -> tuple[list[dict], list[dict]]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x["type"] == "step"], [x for x in lines if x["type"] == "epoch"]


def _assert_finite_run(run: Path, epochs: int) -> None:
    """Every logged loss finite, one epoch line per epoch, and a checkpoint that loads with finite weights."""
    from csst_edge.train.checkpoint import load_checkpoint, model_from_checkpoint

    steps, epoch_lines = _metrics(run)
    assert [e["epoch"] for e in epoch_lines] == list(range(epochs))
    assert steps, "no step lines in metrics.jsonl"
    losses = [s["loss"] for s in steps] + [e["loss"] for e in epoch_lines]
    assert all(math.isfinite(v) for v in losses), losses
    assert (run / "last.pt").is_file()
    state = load_checkpoint(run / "last.pt")
    for k, v in state["model"].items():
        assert v.device.type == "cpu", k  # checkpoints are device-free
        if v.is_floating_point():
            assert torch.isfinite(v).all(), k
    model, _ = model_from_checkpoint(run / "last.pt")  # loads into a fresh model (no _orig_mod./module. junk)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def _watch_first_conv(monkeypatch) -> dict:
    """Record, for the first training-mode call of the model's first Conv2d, the dtype autocast gave its output and
    the memory format of its input / output / weight. train() builds its own model, so wrap create_model."""
    from csst_edge.train import trainer

    seen: dict = {}
    real = trainer.create_model

    def create(*args, **kwargs):
        model = real(*args, **kwargs)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))

        def hook(module, inputs, output):
            if module.training and not seen:
                cl = torch.channels_last
                seen.update(
                    dtype=output.dtype,
                    device=output.device.type,
                    input_cl=inputs[0].is_contiguous(memory_format=cl),
                    output_cl=output.is_contiguous(memory_format=cl),
                    weight_cl=module.weight.is_contiguous(memory_format=cl),
                )

        conv.register_forward_hook(hook)
        return model

    monkeypatch.setattr(trainer, "create_model", create)
    return seen


# ------------------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_amp_training_steps(amp, tmp_path, monkeypatch):
    from csst_edge.train.checkpoint import load_checkpoint
    from csst_edge.train.trainer import train

    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bf16 support")
    data = write_tiny_dataset(tmp_path / "tiny")
    seen = _watch_first_conv(monkeypatch)
    result = train(_cfg(data, tmp_path / "run", f"amp={amp}"), progress=False)
    assert seen["device"] == "cuda" and seen["dtype"] == {"fp16": torch.float16, "bf16": torch.bfloat16}[amp]
    _assert_finite_run(tmp_path / "run", epochs=2)
    assert result.best_miou is not None and 0.0 <= result.best_miou <= 1.0
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["config"]["amp"] == amp and state["scheduler"]["iteration"] == 8
    if amp == "fp16":  # the GradScaler state is saved for resume; bf16 runs without a scaler
        assert state["scaler"] and math.isfinite(state["scaler"]["scale"]) and state["scaler"]["scale"] > 0
    else:
        assert state["scaler"] is None


def test_channels_last_training_steps(tmp_path, monkeypatch):
    from csst_edge.train.trainer import train

    data = write_tiny_dataset(tmp_path / "tiny")
    seen = _watch_first_conv(monkeypatch)
    train(_cfg(data, tmp_path / "run", "channels_last=true", "amp=fp16"), progress=False)
    assert seen["input_cl"] and seen["weight_cl"] and seen["output_cl"], seen
    assert seen["dtype"] == torch.float16
    _assert_finite_run(tmp_path / "run", epochs=2)


def test_fp32_cuda_training_resumes_on_cuda(tmp_path):
    """A CUDA run stopped after one epoch resumes from last.pt (loaded on the CPU, moved to the GPU)."""
    from csst_edge.train.checkpoint import load_checkpoint
    from csst_edge.train.trainer import train

    data = write_tiny_dataset(tmp_path / "tiny")
    cfg = _cfg(data, tmp_path / "run", "val=null")
    assert train(cfg, progress=False, stop_after_epochs=1).epochs_run == 1
    assert train(cfg, progress=False).epochs_run == 1
    _assert_finite_run(tmp_path / "run", epochs=2)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["scheduler"]["iteration"] == 8


# ---------------------------------------------------------------------------------------------- evaluation
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A Fast-SCNN trained on CUDA (fp32) long enough to have a non-trivial mIoU on the tiny val split."""
    from csst_edge.train.trainer import train

    root = tmp_path_factory.mktemp("gpu_eval")
    data = write_tiny_dataset(root / "tiny")
    cfg = _cfg(
        data, root / "run", "epochs=6", "optim.lr=0.05", "crop=[48,64]", "augment.scale=[1.0,1.0]", "eval_every=6"
    )
    train(cfg, progress=False)
    return root / "run"


def _cli_eval(ckpt: Path, data: Path, device: str, out: Path) -> dict:
    from typer.testing import CliRunner

    from csst_edge.cli.main import app

    result = CliRunner().invoke(
        app, ["eval", str(ckpt), "--data", str(data), "--device", device, "--workers", "0", "-q", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "eval_val.json").read_text())


def test_cuda_eval_matches_cpu_eval(trained_run, tmp_path):
    data = trained_run.parent / "tiny" / "tiny.yaml"
    ckpt = trained_run / "best.pt"
    cpu = _cli_eval(ckpt, data, "cpu", tmp_path / "cpu")
    cuda = _cli_eval(ckpt, data, "cuda", tmp_path / "cuda")
    assert cpu["settings"]["device"] == "cpu" and cuda["settings"]["device"].startswith("cuda")
    assert cpu["num_images"] == cuda["num_images"] == 4
    assert cuda["miou"] > 0.2, "the trained model should beat chance on the tiny dataset"
    # one flipped pixel of the 4 x 48 x 64 moves an IoU by ~1e-4: a tie broken differently is allowed, no more
    assert abs(cuda["miou"] - cpu["miou"]) <= 2e-3, (cuda["miou"], cpu["miou"])
    assert abs(cuda["pixel_accuracy"] - cpu["pixel_accuracy"]) <= 2e-3
    # and the trainer's own CUDA evaluation of best.pt (eval.json) is what `csst-edge eval` gets on CUDA
    trainer_eval = json.loads((trained_run / "eval.json").read_text())
    assert abs(trainer_eval["miou"] - cuda["miou"]) <= 2e-3


# ------------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("arch", STUDENTS)
def test_cuda_forward_matches_cpu_fp32(arch):
    from csst_edge.models import create_model

    torch.manual_seed(0)
    model = create_model(arch, num_classes=19).eval()
    x = torch.randn(2, 3, 128, 256, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = model(x)
        gpu = model.cuda()
        out = gpu(x.cuda()).float().cpu()
        out_cl = gpu.to(memory_format=torch.channels_last)(x.cuda().contiguous(memory_format=torch.channels_last))
        out_cl = out_cl.float().cpu()
    assert out.shape == ref.shape == (2, 19, 128, 256)
    # random-weight logits are small (|max| ~0.1-0.5): the tolerance is relative to their own scale. fp32 CPU vs
    # fp64 differs by ~1e-6 of it; cuDNN's fp32 algorithms (Winograd, FFT) stay well inside 1e-3.
    scale = ref.abs().max().item()
    assert scale > 0
    for name, got in (("nchw", out), ("channels_last", out_cl)):
        diff = (got - ref).abs().max().item()
        agree = (got.argmax(1) == ref.argmax(1)).float().mean().item()
        assert diff <= 1e-3 * scale, f"{arch} {name}: max |logit diff| {diff:.3g} (logits up to {scale:.3g})"
        assert agree > 0.99, f"{arch} {name}: argmax agreement {100 * agree:.2f}%"


# --------------------------------------------------------------------------------------------- ONNX Runtime
def test_onnxruntime_cuda_provider_matches_cpu_provider(tmp_path):
    pytest.importorskip("onnx", reason="onnx is not installed: no export")
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(
            f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
            f"(available: {', '.join(ort.get_available_providers())}; install onnxruntime-gpu)"
        )
    from csst_edge.export.frames import synthetic_frames
    from csst_edge.export.onnx_export import export_onnx
    from csst_edge.models import create_model
    from csst_edge.runtime.backends import BackendError, OnnxRuntimeBackend
    from csst_edge.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("fastscnn", num_classes=3).eval()
    ckpt = tmp_path / "fastscnn.pt"
    save_checkpoint(
        ckpt,
        {
            "model": model.state_dict(),
            "arch": "fastscnn",
            "num_classes": 3,
            "class_names": ["road", "car", "sky"],
            "mean": [0.4, 0.45, 0.5],
            "std": [0.2, 0.25, 0.3],
        },
    )
    onnx_path = export_onnx(ckpt, tmp_path / "fastscnn.onnx", 128, 256, output="logits", verify_count=1).path
    try:  # exact fp32 convolutions on the GPU, as for the PyTorch parity test
        cuda = OnnxRuntimeBackend(onnx_path, providers=["cuda"], provider_options={"cuda": {"use_tf32": "0"}})
    except BackendError:  # an onnxruntime-gpu without the use_tf32 option
        cuda = OnnxRuntimeBackend(onnx_path, providers=["cuda"])
    cpu = OnnxRuntimeBackend(onnx_path, providers=["cpu"])
    assert cuda.session.get_providers()[0] == "CUDAExecutionProvider", (
        f"CUDAExecutionProvider is listed but the session fell back to {cuda.session.get_providers()} "
        "(CUDA / cuDNN libraries onnxruntime-gpu needs are missing?)"
    )
    frames = synthetic_frames(3, 128, 256, seed=4)
    with cuda, cpu:  # the export is static batch 1: one frame per call
        a = np.concatenate([cuda.infer(f) for f in frames])
        b = np.concatenate([cpu.infer(f) for f in frames])
    assert a.shape == b.shape == (3, 3, 128, 256)
    agree = (a.argmax(1) == b.argmax(1)).mean()
    assert agree >= 0.995, f"argmax agreement CUDA vs CPU provider {100 * agree:.2f}%"
    assert np.abs(a - b).max() <= 1e-2 * np.abs(b).max()  # a sanity bound; the argmax is the criterion


# ------------------------------------------------------------------------------------------------- compile
def test_compiled_training_steps(tmp_path):
    """`compile=true` trains through torch.compile and still saves a checkpoint of the plain model (slowest test:
    inductor compiles forward and backward; last in the file so the others report first)."""
    from csst_edge.train.trainer import train

    data = write_tiny_dataset(tmp_path / "tiny")
    train(_cfg(data, tmp_path / "run", "compile=true", "amp=fp16", "epochs=1", "val=null"), progress=False)
    _assert_finite_run(tmp_path / "run", epochs=1)
