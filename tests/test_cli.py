"""The CLI root: command groups, --version, one-line errors (traceback only with --debug), and a fresh-process run."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from csst_edge import __version__
from csst_edge.cli.main import app
from csst_edge.errors import DatasetError

runner = CliRunner()


def test_help_lists_the_command_groups():
    import typer

    root = typer.main.get_command(app)
    assert {"demo", "data", "train", "pseudo-label", "eval", "export", "bench", "finetune", "runtime", "round"} <= set(
        root.commands
    )
    assert {"synth", "index", "stats"} <= set(root.commands["data"].commands)
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "pseudo-label" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_known_error_is_one_red_line_and_debug_shows_the_traceback(tmp_path):
    missing = tmp_path / "missing.yaml"
    result = runner.invoke(app, ["data", "index", str(missing)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing.yaml" in lines[0]
    debug = runner.invoke(app, ["--debug", "data", "index", str(missing)])
    assert isinstance(debug.exception, DatasetError)


def test_unknown_config_key_names_the_key(tiny_dataset, tmp_path):
    result = runner.invoke(app, ["train", f"train=[{{data: '{tiny_dataset}'}}]", "epochz=3", f"out={tmp_path}"])
    assert result.exit_code == 1 and "epochz" in result.output


@pytest.mark.parametrize("args", [["--version"], ["data", "--help"]])
def test_console_entry_point_runs_in_a_fresh_process(args):
    done = subprocess.run([sys.executable, "-m", "csst_edge", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_cli_imports_without_torch_so_the_vehicle_image_can_run_it():
    code = (
        "import sys; import csst_edge.cli.main; "
        "sys.exit(1 if any(m == 'torch' or m.startswith('torch.') for m in sys.modules) else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, "importing the CLI loaded torch" + done.stderr


# ------------------------------------------------------------------------------------- one vocabulary
def _capture(monkeypatch, module: str, name: str, result=None) -> dict:
    """Replace a library function the CLI calls with one that records its arguments."""
    import importlib

    seen: dict = {}

    def fake(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        return result() if callable(result) else result

    monkeypatch.setattr(importlib.import_module(module), name, fake)
    return seen


def _run_summary():
    from csst_edge.runtime.loop import RunSummary

    return RunSummary("m.onnx", "ort-cpu", "v.mp4", 1, 0.1, 10.0, 1.0, 1.0, 1.0, 0, 0, 0, "end")


@pytest.mark.parametrize(
    "new, old, check",
    [
        (["--overlay", "o.mp4"], ["-o", "o.mp4"], lambda s: str(s.output_video) == "o.mp4"),
        (["--overlay", "o.mp4"], ["--output", "o.mp4"], lambda s: str(s.output_video) == "o.mp4"),
        (["--retries", "3"], ["--max-retries", "3"], lambda s: s.max_retries == 3),
        (["--backend", "ort-cpu"], ["--providers", "cpu"], "cpu"),
    ],
    ids=["-o", "--output", "--max-retries", "--providers"],
)
def test_runtime_run_renamed_options_and_their_old_spellings(monkeypatch, tmp_path, new, old, check):
    from csst_edge.runtime.backends import resolve_providers

    seen = _capture(monkeypatch, "csst_edge.runtime.loop", "run_runtime", _run_summary)
    base = ["runtime", "run", str(tmp_path / "m.onnx"), "--source", "v.mp4", "-q"]
    settings = []
    for args in (new, old):
        result = runner.invoke(app, base + args)
        assert result.exit_code == 0, result.output
        settings.append(seen["args"][2])
        deprecation = [line for line in result.output.splitlines() if "deprecated" in line]
        assert len(deprecation) == (1 if args is old else 0), result.output
    for s in settings:
        if check == "cpu":  # both spellings ask ONNX Runtime for the CPU provider
            assert resolve_providers(s.providers) == ["CPUExecutionProvider"]
        else:
            assert check(s)


def test_runtime_backend_names_are_the_bench_names(monkeypatch, tmp_path):
    from csst_edge.export.bench import BACKENDS

    _capture(monkeypatch, "csst_edge.runtime.loop", "run_runtime", _run_summary)
    base = ["runtime", "run", str(tmp_path / "m.onnx"), "--source", "v.mp4", "-q", "--backend"]
    assert runner.invoke(app, [*base, "ort-cpu"]).exit_code == 0
    assert {"ort-cpu", "ort-cuda", "ort-trt", "trt"} <= set(BACKENDS)
    for bad, message in (("tensorrt", "unknown backend"), ("trt", "ort-trt")):
        result = runner.invoke(app, [*base, bad])
        assert result.exit_code == 1 and message in result.output, result.output


@pytest.mark.parametrize(
    "new, old, key, value",
    [
        (["--head", "probs"], ["--output", "probs"], "output", "probs"),
        (["--batch-size", "2"], ["--batch", "2"], "batch", 2),
    ],
    ids=["--output", "--batch"],
)
def test_export_onnx_renamed_options_and_their_old_spellings(monkeypatch, tmp_path, new, old, key, value):
    from types import SimpleNamespace

    result_obj = SimpleNamespace(notes=[], summary=lambda: "ok")
    seen = _capture(monkeypatch, "csst_edge.export.onnx_export", "export_onnx", result_obj)
    base = ["export", "onnx", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.onnx"), "--size", "64x64", "-q"]
    for args in (new, old):
        result = runner.invoke(app, base + args)
        assert result.exit_code == 0, result.output
        assert seen["kwargs"][key] == value
        assert ("deprecated" in result.output) == (args is old), result.output
    if key == "output":
        both = runner.invoke(app, [*base, "--head", "logits", "--output", "probs"])
        assert both.exit_code == 1 and "give only --head" in both.output
        assert runner.invoke(app, [*base, "--head", "argmax"]).exit_code == 1


def test_bench_batch_size_device_quiet_and_old_batch(monkeypatch, tmp_path):
    seen = _capture(monkeypatch, "csst_edge.export.bench", "run_bench", [])
    base = ["bench", "fastscnn", "--sizes", "64x64", "--backends", "torch", "-o", str(tmp_path), "-q"]
    for args in (["--batch-size", "2", "--device", "cpu"], ["--batch", "2"]):
        result = runner.invoke(app, base + args)
        assert result.exit_code == 0, result.output
        assert seen["kwargs"]["batch"] == 2
        assert ("deprecated" in result.output) == ("--batch" in args), result.output
    assert seen["kwargs"]["device"] == "auto"


def test_bench_sizes_must_give_both_sides():
    result = runner.invoke(app, ["bench", "fastscnn", "--sizes", "512"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and "'512' is not HEIGHTxWIDTH" in lines[0], result.output


def test_data_synth_size_and_video_fps_and_their_old_spellings(monkeypatch, tmp_path):
    dataset = _capture(monkeypatch, "csst_edge.data.synth", "write_dataset", {})
    video = _capture(monkeypatch, "csst_edge.data.synth", "write_video", None)
    base = ["data", "synth", "-o", str(tmp_path), "--video-frames", "2", "-q"]
    for args in (["--size", "32x64", "--video-fps", "30"], ["--height", "32", "--width", "64", "--fps", "30"]):
        result = runner.invoke(app, base + args)
        assert result.exit_code == 0, result.output
        assert (dataset["kwargs"]["height"], dataset["kwargs"]["width"]) == (32, 64)
        assert video["kwargs"]["fps"] == 30.0
        assert result.output.count("deprecated") == (0 if "--size" in args else 3), result.output


@pytest.mark.parametrize(
    "args",
    [["optim.lr=0.02", "--export-head", "labels"], ["--set", "optim.lr=0.02", "--export-output", "labels"]],
    ids=["new", "old"],
)
def test_round_overrides_are_positional_and_set_still_works(monkeypatch, tmp_path, args):
    report = {
        "decision": {"promote": True, "reason": "r"},
        "before": {"miou": 0.1},
        "after": {"miou": 0.2},
        "data_added": {"frames_kept": 1},
        "round": str(tmp_path),
        "export": None,
    }
    seen = _capture(monkeypatch, "csst_edge.pipeline.round", "run_round", report)
    harvest = tmp_path / "harvest"
    harvest.mkdir()
    models = ["--teacher", "t.pt", "--student", "s.pt", "--data", "d.yaml", "--val", "v.yaml", "-o", str(tmp_path)]
    result = runner.invoke(app, ["round", str(harvest), *models, *args, "-q"])
    assert result.exit_code == 0, result.output
    settings = seen["args"][0]
    assert settings.harvests == [str(harvest)] and settings.overrides == ["optim.lr=0.02"]
    assert settings.export_output == "labels"
    assert result.output.count("deprecated") == (2 if "--set" in args else 0), result.output


def test_out_is_o_everywhere():
    import typer

    root = typer.main.get_command(app)
    commands = {
        "demo": root.commands["demo"],
        "train": root.commands["train"],
        "finetune": root.commands["finetune"],
        "predict": root.commands["predict"],
        "bench": root.commands["bench"],
        "synth": root.commands["data"].commands["synth"],
        "export onnx": root.commands["export"].commands["onnx"],
    }
    for name, command in commands.items():
        out = [p for p in command.params if "--out" in p.opts]
        assert out and "-o" in out[0].opts, name
    run = root.commands["runtime"].commands["run"]
    assert [p.opts for p in run.params if "-o" in p.opts and not p.hidden] == []  # -o is only the old overlay


# ------------------------------------------------------------------------------------------- config help
def test_unknown_config_key_says_did_you_mean(tmp_path):
    result = runner.invoke(app, ["train", "epoch=1", f"out={tmp_path}"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "unknown config key 'epoch'" in lines[0] and "did you mean 'epochs'?" in lines[0]
    nested = runner.invoke(app, ["train", "optim.lr_=0.1"])
    assert "did you mean 'optim.lr'?" in nested.output


def test_print_config_output_loads_back_as_the_same_config(tmp_path):
    from csst_edge.train.config import load_train_config

    overrides = ["epochs=7", "optim.lr=0.02", "train=[{data: 'x.yaml', split: train}]", "crop=384x768"]
    result = runner.invoke(app, ["train", "--print-config", *overrides, "--model", "bisenet_r18"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "printed.yaml"
    path.write_text(result.output)
    printed = load_train_config(path)
    assert printed == load_train_config(None, [*overrides, "model=bisenet_r18"])
    assert printed.epochs == 7 and printed.crop == (384, 768) and printed.model == "bisenet_r18"
    assert not (tmp_path / "runs").exists()


def test_shell_completion_is_on_and_demo_help_shows_its_defaults():
    help_text = runner.invoke(app, ["--help"]).output
    assert "--install-completion" in help_text and "--show-completion" in help_text
    demo = runner.invoke(app, ["demo", "--help"], env={"COLUMNS": "200"}).output
    for default in ("deeplabv3plus_lite0", "efficientnet-lite0", "fastscnn"):
        assert f"default: ({default})" in demo or f"default: {default}" in demo, demo
    assert "Teacher model ." not in demo and "random init ." not in demo


# -------------------------------------------------------------------------------------------- packaging
def test_jetson_image_installs_the_runtime_dependencies():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "Dockerfile.jetson").read_text()
    pip_lines = " ".join(text.replace("\\\n", " ").splitlines())
    installs = [part for part in pip_lines.split("&&") if "pip install" in part]
    assert any('"fsspec' in part for part in installs), installs
    assert "ARG WITH_S3=0" in text and "s3fs" in text


def test_license_and_changelog():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    license_text = (root / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    changelog = (root / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog and "predict" in changelog and __version__ in changelog
