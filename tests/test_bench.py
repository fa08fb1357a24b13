"""`csst-edge bench`: rows per backend and size, skipped rows that explain themselves, JSON + markdown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_dataset

from csst_edge.export.bench import BACKENDS, parse_backends, parse_sizes, run_bench, write_report
from csst_edge.export.errors import ExportError
from csst_edge.runtime.backends import available_providers
from csst_edge.train.checkpoint import save_checkpoint

H, W = 64, 128


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    from csst_edge.models import create_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bench") / "fastscnn.pt"
    model = create_model("fastscnn", num_classes=3).eval()
    save_checkpoint(
        path, {"model": model.state_dict(), "arch": "fastscnn", "num_classes": 3, "class_names": ["c0", "c1", "c2"]}
    )
    return path


def test_rows_for_every_backend_and_missing_ones_explain_themselves(tmp_path, ckpt):
    backends = [b for b in BACKENDS if b != "torch-compile"]  # compiling on 2 shared cores is too slow for a test
    rows = run_bench([ckpt], [(H, W)], iters=2, warmup=1, threads=1, backends=backends, out_dir=tmp_path)
    by = {r.backend: r for r in rows}
    assert set(by) == set(backends)
    for name in ("torch", "ort-cpu"):
        r = by[name]
        assert r.ok, r.status
        assert r.mean_ms > 0 and r.p50_ms > 0 and r.p99_ms >= r.p50_ms * 0 and r.fps > 0 and r.iters == 2
        assert r.peak_mem_mb is not None and r.file_mb > 0
    if "CUDAExecutionProvider" not in available_providers():
        assert by["ort-cuda"].status.startswith("skipped:") and "CUDAExecutionProvider" in by["ort-cuda"].status
    if "TensorrtExecutionProvider" not in available_providers():
        assert by["ort-trt"].status.startswith("skipped:") and "TensorrtExecutionProvider" in by["ort-trt"].status
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert by["trt"].status.startswith("skipped:") and "tensorrt" in by["trt"].status
    assert (tmp_path / "onnx" / f"fastscnn_{H}x{W}_b1.onnx").is_file()  # exported once, reused by ORT rows

    json_path, md_path = write_report(rows, tmp_path, {"sizes": f"{H}x{W}", "threads": 1})
    report = json.loads(json_path.read_text())
    assert len(report["rows"]) == len(backends) and report["environment"]["threads"] == 1
    md = md_path.read_text()
    assert md.count("\n| fastscnn.pt |") == len(backends) and "skipped:" in md


def test_onnx_and_engine_models_skip_backends_they_cannot_use(tmp_path, ckpt):
    from csst_edge.export.onnx_export import export_onnx

    onnx_path = export_onnx(ckpt, tmp_path / "m.onnx", H, W, output="labels", verify_count=1).path
    rows = run_bench(
        [onnx_path],
        [(H, W), (2 * H, 2 * W)],
        iters=2,
        warmup=0,
        threads=1,
        backends=["torch", "ort-cpu"],
        out_dir=tmp_path,
    )
    status = {(r.backend, r.size): r.status for r in rows}
    assert "needs a PyTorch checkpoint" in status[("torch", f"{H}x{W}")]
    assert status[("ort-cpu", f"{H}x{W}")] == "ok"
    assert "static ONNX model is 64x128" in status[("ort-cpu", f"{2 * H}x{2 * W}")]


def test_bench_measures_miou_on_a_dataset(tmp_path, ckpt):
    data = write_tiny_dataset(tmp_path / "tiny", n=2, size=(H, W))
    rows = run_bench(
        [ckpt], [(H, W)], iters=1, warmup=0, threads=1, backends=["torch", "ort-cpu"], data=data, out_dir=tmp_path
    )
    assert all(r.ok and 0.0 <= r.miou <= 1.0 for r in rows)
    assert rows[0].miou == pytest.approx(rows[1].miou, abs=0.01)  # same model, same frames


def test_parse_errors_name_the_value():
    assert parse_sizes("512x1024, 1024x2048") == [(512, 1024), (1024, 2048)]
    with pytest.raises(ExportError, match="512by1024"):
        parse_sizes("512by1024")
    assert parse_backends("all") == list(BACKENDS)
    with pytest.raises(ExportError, match="tpu"):
        parse_backends("torch,tpu")


def test_bench_cli(tmp_path, ckpt):
    import typer
    from typer.testing import CliRunner

    from csst_edge.cli.bench import bench_command
    from csst_edge.cli.common import ErrorHandlingGroup

    app = typer.Typer(cls=ErrorHandlingGroup)
    app.command("bench")(bench_command)
    app.command("noop")(lambda: None)  # two commands, so `bench` stays a subcommand
    out = tmp_path / "out"
    r = CliRunner().invoke(
        app,
        [
            "bench",
            str(ckpt),
            "--sizes",
            f"{H}x{W}",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--backends",
            "ort-cpu,trt",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [row["backend"] for row in rows] == ["ort-cpu", "trt"] and rows[0]["status"] == "ok"
    r = CliRunner().invoke(app, ["bench", str(ckpt), "--backends", "tpu"])
    assert r.exit_code == 1 and "tpu" in r.output


def test_cpu_info_reads_the_isa_features_that_decide_int8():
    from csst_edge.export.bench import cpu_info, isa_line

    text = "processor\t: 0\nmodel name\t: Intel Xeon X\nflags\t\t: fpu sse avx2 avx512f avx512_vnni amx_int8\n"
    info = cpu_info(text)
    assert info["cpu_model"] == "Intel Xeon X"
    assert info["isa"]["AVX-512 VNNI"] and info["isa"]["AMX-INT8"] and not info["isa"]["AVX-VNNI"]
    line = isa_line(info)
    assert line.startswith("CPU Intel Xeon X:") and "AVX-512 VNNI yes" in line and "AVX-VNNI no" in line
    assert "unknown" in isa_line({"cpu_model": "m", "isa": None})
