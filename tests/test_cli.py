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
