"""benchmarks/train_speed.py throughput: crop parsing and the teachers' table, on tiny inputs."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("benchmarks.train_speed")


def test_crop_is_one_side_or_height_by_width(bench):
    assert bench.parse_crop("512") == (512, 512)
    assert bench.parse_crop("288x384") == (288, 384)
    for bad in ("288x", "0x384", "axb", "1x2x3"):
        with pytest.raises(SystemExit, match="--crop"):
            bench.parse_crop(bad)


def test_teacher_throughput_table_uses_the_width_layout_and_loss_it_names(tmp_path, bench, monkeypatch):
    built = []
    real_create = bench.create_model

    def recording_create(name, num_classes, **kwargs):
        built.append((name, kwargs))
        return real_create(name, num_classes, **kwargs)

    monkeypatch.setattr(bench, "create_model", recording_create)
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    args = argparse.Namespace(
        models=["deeplabv3plus_lite0", "fastscnn"],
        crop="32x64",
        batch=2,
        gpu_batch=2,
        iters=1,
        warmup=0,
        channels=16,
        channels_last=True,
        loss="ohem",
        tag="teachers",
        out=str(tmp_path),
    )
    bench.cmd_throughput(args)

    # the width reaches the Lite teacher only: Fast-SCNN has no such option
    assert built == [("deeplabv3plus_lite0", {"channels": 16}), ("fastscnn", {})]
    report = json.loads((tmp_path / "train_speed_throughput_teachers.json").read_text())
    assert (report["channels"], report["channels_last"], report["loss"]) == (16, True, "ohem")
    assert [r["model"] for r in report["rows"]] == ["deeplabv3plus_lite0", "fastscnn"]
    for row in report["rows"]:
        assert row["crop"] == "32x64" and row["batch"] == 2 and row["device"] == "cpu"
        assert row["img_per_s"] > 0
        assert row["s_per_batch"] == pytest.approx(2 / row["img_per_s"], rel=0.05, abs=0.002)
    table = (tmp_path / "train_speed_throughput_teachers.md").read_text()
    assert "loss ohem, channels-last, Lite width 16" in table
    assert "| deeplabv3plus_lite0 | cpu | 2 | 32x64 |" in table
