"""`csst-edge demo` end to end in a reduced mode: every stage runs, the report and table are written."""

from __future__ import annotations

import json

from rich.console import Console

from csst_edge.pipeline.demo import DemoSettings, run_demo


def test_demo_runs_end_to_end_in_reduced_mode(tmp_path):
    settings = DemoSettings(
        out=tmp_path / "demo",
        height=64,
        width=128,
        labelled=4,
        unlabelled=6,
        val=3,
        teacher_epochs=1,  # the default teacher: DeepLabV3+-Lite0 from the installed ImageNet wheel
        student_epochs=1,
        batch_size=2,
        workers=0,
        device="cpu",
        video_frames=24,
        round_epochs=1,
    )
    summary = run_demo(settings, Console(record=True, width=120), progress=False)
    out = tmp_path / "demo"
    assert set(summary["results"]) == {"teacher", "baseline student", "CSST student"}
    for run in ("teacher", "student_baseline", "student_csst"):
        assert (out / run / "last.pt").is_file()
    assert len(list((out / "pseudo" / "labels").rglob("*.png"))) == 6
    assert (out / "report.md").read_text().count("| road |") == 1
    assert (out / "per_class_iou.png").read_bytes()[:4] == b"\x89PNG"
    import cv2

    grid = cv2.imread(str(out / "predictions.png"))  # image | ground truth | baseline | CSST, one row per frame
    assert grid is not None and grid.shape[1] == 4 * (128 + 4) and grid.shape[0] == 24 + 3 * (64 + 4)
    assert "predictions.png" in (out / "report.md").read_text()
    import torch

    teacher = torch.load(out / "teacher" / "last.pt", weights_only=True)
    assert teacher["arch"] == "deeplabv3plus_lite0" and teacher["mean"] == [0.5, 0.5, 0.5]
    assert teacher["model_kwargs"] == {"channels": 128}  # the demo's narrower, faster teacher head
    for run in ("teacher", "student_baseline", "student_csst"):  # NHWC training, the faster layout on a CPU
        assert "channels_last: true" in (out / run / "config.yaml").read_text()
    on_disk = json.loads((out / "demo.json").read_text())
    assert len(on_disk["class_names"]) == 19 and 0.0 <= on_disk["results"]["CSST student"]["miou"] <= 1.0
    # the CSST student really trained on pseudo labels with centroid sampling
    assert (out / "student_csst" / "centroids_pseudo.npz").is_file()
    # the vehicle half: exported student ran over the dashcam video, harvested, and one round was gated
    loop = on_disk["vehicle_loop"]
    assert loop["runtime"]["frames"] == 24 and loop["runtime"]["harvest"]["frames"] >= 1
    assert (out / "round1" / "round.json").is_file() and isinstance(loop["round_decision"]["promote"], bool)


def test_demo_rerun_with_other_settings_is_an_error_that_names_the_folder(tmp_path):
    import pytest

    from csst_edge.errors import ConfigError
    from csst_edge.pipeline.demo import check_cached_settings

    out = tmp_path / "demo"
    check_cached_settings(DemoSettings(out=out), out)
    check_cached_settings(DemoSettings(out=out, workers=0, device="cpu"), out)  # speed-only options may change
    with pytest.raises(ConfigError, match=r"demo holds a demo run with other settings \(seed 0 -> 1\)"):
        check_cached_settings(DemoSettings(out=out, seed=1), out)
    assert json.loads((out / "demo_settings.json").read_text())["seed"] == "0"  # the record is not overwritten


def test_only_a_deeplabv3plus_teacher_gets_the_demo_width():
    from csst_edge.pipeline.demo import _has_width

    assert _has_width(DemoSettings())
    assert not _has_width(DemoSettings(teacher="icnet_r18"))  # ICNet takes no `channels`: its own head stays
    assert not _has_width(DemoSettings(teacher_channels=None))
