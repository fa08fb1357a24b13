"""parse_hw: the one HEIGHTxWIDTH parser, and every command reporting a bad size the same way (exit code 1)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from csst_edge.cli.main import app
from csst_edge.errors import ConfigError
from csst_edge.sizes import parse_hw


@pytest.mark.parametrize(
    "text, size",
    [
        ("512x1024", (512, 1024)),
        ("512X1024", (512, 1024)),
        ("512×1024", (512, 1024)),
        (" 288 x 384 ", (288, 384)),
        ("64", (64, 64)),
    ],
)
def test_parse_hw_reads_height_then_width(text, size):
    assert parse_hw(text) == size


@pytest.mark.parametrize("text", ["512by1024", "x", "", "512x", "1x2x3", "1.5x2", "axb"])
def test_parse_hw_names_the_option_and_the_text(text):
    with pytest.raises(ConfigError, match=rf"^--crop: '{text}' is not HEIGHTxWIDTH in pixels, e\.g\. 512x1024$"):
        parse_hw(text, "--crop")


@pytest.mark.parametrize("text", ["0x10", "10x-1", "4x16"])
def test_parse_hw_enforces_the_minimum(text):
    with pytest.raises(ConfigError, match=rf"^--size: '{text}' is too small \(at least 8x8\)$"):
        parse_hw(text, "--size", minimum=8)
    assert parse_hw("8x8", minimum=8) == (8, 8)


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--crop", "12by34"],
        ["finetune", "missing.pt", "--data", "synth_cityB", "--crop", "12by34"],
        ["export", "onnx", "missing.pt", "--size", "12by34"],
        ["round", "harvest", "--teacher", "t.pt", "--student", "s.pt", "--data", "d", "--val", "v"]
        + ["-o", "out", "--export-size", "12by34"],
        ["bench", "fastscnn", "--sizes", "12by34"],
    ],
    ids=lambda a: a[0],
)
def test_cli_bad_size_is_one_line_exit_1(args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "'12by34' is not HEIGHTxWIDTH" in lines[0]
