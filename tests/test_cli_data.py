"""`csst-edge data index` / `data stats` through the real CLI app."""

from __future__ import annotations

import json

import cv2
import numpy as np
from conftest import add_stray_id, set_id_remap
from typer.testing import CliRunner

from csst_edge.cli.main import app
from csst_edge.data.centroids import CentroidIndex

runner = CliRunner()


def test_index_builds_then_updates_incrementally(tiny_dataset, tmp_path):
    out = tmp_path / "index.npz"
    first = runner.invoke(
        app, ["data", "index", str(tiny_dataset), "--split", "train", "-o", str(out), "-q", "--workers", "1"]
    )
    assert first.exit_code == 0, first.output
    assert "read 4 label maps, reused 0" in first.output
    index = CentroidIndex.load(out)
    assert index.num_images == 4 and set(np.unique(index.cls)) == {0, 1, 2}
    again = runner.invoke(app, ["data", "index", str(tiny_dataset), "-o", str(out), "-q"])
    assert again.exit_code == 0 and "read 0 label maps, reused 4" in again.output


def test_stats_prints_the_balance_table_and_writes_plot_and_json(tiny_dataset, tmp_path):
    result = runner.invoke(
        app,
        [
            "data",
            "stats",
            str(tiny_dataset),
            "--crop",
            "16x16",
            "--samples",
            "90",
            "-q",
            "--plot",
            str(tmp_path / "balance.png"),
            "--json",
            str(tmp_path / "balance.json"),
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "crop px % CS" in result.output.replace("\n", " ") or "CS" in result.output
    assert (tmp_path / "balance.png").read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((tmp_path / "balance.json").read_text())["rows"]
    assert [r["class"] for r in rows] == ["c0", "c1", "c2"]
    assert abs(sum(r["pixel_share"] for r in rows) - 1) < 1e-9
    # class c2 is a small square: centroid sampling must show it in more crops than random cropping does
    assert rows[2]["crop_presence_centroid"] > rows[2]["crop_presence_random"]


def test_bad_source_is_one_clear_error(tmp_path):
    result = runner.invoke(app, ["data", "index", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "nope.yaml" in result.output and "Traceback" not in result.output


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_index_stray_class_id_is_one_clear_error_until_remapped(tiny_dataset, tmp_path):
    bad = add_stray_id(tiny_dataset, "train", "img01", 200)
    args = ["data", "index", str(tiny_dataset), "--split", "train", "-o", str(tmp_path / "i.npz"), "-q"]
    line = _one_error_line(runner.invoke(app, [*args, "--workers", "2"]))  # raised in a worker process
    assert str(bad) in line and "class id(s) 200" in line and "3 classes" in line and "id_remap: {200: 255}" in line
    set_id_remap(tiny_dataset, {200: 255})
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


def test_index_of_pseudo_folder_checks_ids_too(tmp_path):
    folder = tmp_path / "pseudo"
    (folder / "labels").mkdir(parents=True)
    label = np.zeros((8, 8), np.uint8)
    label[0, 0], label[1, 1] = 255, 200
    cv2.imwrite(str(folder / "labels" / "a.png"), label)
    (folder / "meta.json").write_text(json.dumps({"class_names": ["c0", "c1"], "ignore_index": 255}))
    record = {"name": "a", "image": str(tmp_path / "a.jpg"), "label": "labels/a.png", "status": "ok"}
    (folder / "manifest.jsonl").write_text(json.dumps(record) + "\n")
    line = _one_error_line(runner.invoke(app, ["data", "index", str(folder), "-o", str(tmp_path / "i.npz"), "-q"]))
    assert "a.png" in line and "class id(s) 200" in line and "2 classes" in line and "id_remap" in line
