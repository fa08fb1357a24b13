"""benchmarks/camvid_neighbours.py: frame-name parsing, nearest-frame pairing and the pasted-label score."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "camvid_neighbours.py"


@pytest.fixture(scope="module")
def nb():
    return importlib.import_module("benchmarks.camvid_neighbours")


def test_parse_frame_reads_both_camvid_name_forms(nb):
    assert nb.parse_frame("0016E5_07959") == ("0016E5", 7959)
    assert nb.parse_frame("0006R0_f00990") == ("0006R0", 990)
    with pytest.raises(ValueError, match="img01"):
        nb.parse_frame("img01")


def test_nearest_pairs_stays_in_the_sequence_breaks_ties_early_and_never_pairs_a_frame_with_itself(nb):
    pool = ["A_000", "A_060", "B_100", "C_050"]
    pairs = nb.nearest_pairs(["A_030", "A_050", "B_010", "D_000", "C_050"], pool)
    assert pairs == [
        ("A_030", "A_000", 30),  # 30 from both: the earlier frame
        ("A_050", "A_060", 10),
        ("B_010", "B_100", 90),  # A_000 is nearer in number but another sequence
        ("D_000", None, None),
        ("C_050", None, None),  # its only pool frame is itself
    ]


def test_sequence_spans(nb):
    spans = nb.sequence_spans(["A_000", "A_030", "A_090", "B_010", "B_012"], fps=30)
    assert spans["A"] == {"frames": 3, "span_s": 3.0, "median_step_s": 1.5}
    assert spans["B"]["span_s"] == pytest.approx(2 / 30)


def test_paste_score_against_a_hand_count(tmp_path, nb):
    ds = SimpleNamespace(num_classes=3, ignore_index=255, label_lut=None)
    truth = np.zeros((4, 4), np.uint8)
    truth[:, 2:] = 1
    truth[3, 3] = 255  # void in the target: not counted at all
    pasted = np.zeros((4, 4), np.uint8)
    pasted[:, 1:] = 1  # column 1: class 0 called class 1
    pasted[0, 0] = 255  # void in the pasted label: left out, lowers coverage
    paths = {"S_001": tmp_path / "t.png", "S_000": tmp_path / "p.png"}
    cv2.imwrite(str(paths["S_001"]), truth)
    cv2.imwrite(str(paths["S_000"]), pasted)

    score = nb.paste_score([("S_001", "S_000", 1), ("S_002", None, None)], paths, ds)

    # counted pixels: 15 labelled in the target, minus (0, 0) -> 14
    # class 0: truth 7 (columns 0-1 minus (0, 0)), predicted 3 (column 0 minus (0, 0)), tp 3 -> IoU 3 / 7
    # class 1: truth 7 (columns 2-3 minus (3, 3)), predicted 11, tp 7 -> IoU 7 / 11; class 2 absent: nan
    assert score["per_class_iou"][0] == pytest.approx(3 / 7)
    assert score["per_class_iou"][1] == pytest.approx(7 / 11)
    assert np.isnan(score["per_class_iou"][2])
    assert score["miou"] == pytest.approx((3 / 7 + 7 / 11) / 2)
    assert score["coverage"] == pytest.approx(14 / 15)
    assert score["frames"] == 1 and score["gap_frames"] == [1]


def test_block_split_on_camvid_leaves_the_unlabelled_frames_seconds_further_away(camvid_root, tmp_path, monkeypatch):
    """`--block 8` (camvid_csst.py's split of the same name) labels 12 runs of 8 frames: 96 labelled, 271 not, each
    unlabelled frame several seconds from a labelled one, where every 4th frame leaves them 1-2 s away."""
    import json
    import subprocess
    import sys

    monkeypatch.setenv("CSST_CAMVID_ROOT", str(camvid_root))
    run = [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--block"]
    subprocess.run([*run, "8"], check=True, capture_output=True)
    row = json.loads((tmp_path / "camvid_neighbours_block8.json").read_text())["rows"]["unlabelled <- labelled"]
    assert row["frames"] == 271
    assert row["gap_median_s"] >= 3.0 and row["gap_max_s"] >= 10.0  # every 4th frame: 1.0 and 2.0
    assert not (tmp_path / "camvid_neighbours.json").exists()
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run([*run, "0"], check=True, capture_output=True)
