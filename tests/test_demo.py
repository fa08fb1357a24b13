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
        val=3,
        teacher_epochs=1,  # the default teacher: DeepLabV3+-Lite0 from the installed ImageNet wheel
        student_epochs=1,
        student_epoch_samples=8,
        pseudo_scales=(1.0,),
        batch_size=2,
        workers=0,
        device="cpu",
        video_frames=24,
    )
    summary = run_demo(settings, Console(record=True, width=120), progress=False)
    out = tmp_path / "demo"
    assert set(summary["results"]) == {"teacher", "deployed student", "CSST student (round 1)"}
    for run in ("teacher", "student_deployed", "round1/student"):
        assert (out / run / "last.pt").is_file()
    # the vehicle: the deployed student's ONNX export drove every one of the day's drives (24 frames over 4) and
    # harvested into one folder, which carries over from drive to drive
    loop = summary["vehicle_loop"]
    harvested = loop["runtime"]["harvest"]["frames"]
    assert [d["frames"] for d in loop["runtime"]["drives"]] == [6, 6, 6, 6]
    assert loop["runtime"]["frames"] == 24 and 1 <= harvested <= 24
    per_drive = [d["harvest"]["frames"] for d in loop["runtime"]["drives"]]
    assert per_drive == sorted(per_drive) and per_drive[-1] == harvested
    sources = {json.loads(line).get("source") for line in (out / "vehicle" / "harvest" / "manifest.jsonl").open()}
    assert len(sources) >= 2  # frames from more than one drive
    # the round pseudo-labelled exactly the harvest and trained the CSST student on it with centroid sampling
    assert len(list((out / "round1" / "pseudo" / "labels").rglob("*.png"))) == harvested
    config = (out / "round1" / "student" / "config.yaml").read_text()
    assert "sampling: centroid" in config and "real_fraction: 0.5" in config and "pseudo:" in config
    assert "channels_last: true" in config  # the deployed student's recipe carried into the round
    round_report = json.loads((out / "round1" / "round.json").read_text())
    assert isinstance(round_report["decision"]["promote"], bool) and round_report["decision"]["reason"]
    assert summary["round"]["promote"] == round_report["decision"]["promote"]
    lo, hi = summary["round"]["interval"]
    assert lo <= summary["csst_gain_miou"] / 100 <= hi
    report = (out / "report.md").read_text()
    assert report.count("| road |") == 1 and "Round 1" in report and "interval" in report
    assert (out / "per_class_iou.png").read_bytes()[:4] == b"\x89PNG"
    import cv2

    grid = cv2.imread(str(out / "predictions.png"))  # image | ground truth | deployed | CSST, one row per frame
    assert grid is not None and grid.shape[1] == 4 * (128 + 4) and grid.shape[0] == 24 + 3 * (64 + 4)
    assert "predictions.png" in report
    import torch

    teacher = torch.load(out / "teacher" / "last.pt", weights_only=True)
    assert teacher["arch"] == "deeplabv3plus_lite0" and teacher["mean"] == [0.5, 0.5, 0.5]
    assert teacher["model_kwargs"] == {"channels": 128}  # the demo's narrower, faster teacher head
    on_disk = json.loads((out / "demo.json").read_text())
    assert len(on_disk["class_names"]) == 19 and 0.0 <= on_disk["results"]["CSST student (round 1)"]["miou"] <= 1.0

    # a rerun finds every stage cached: the vehicle does not drive again, the numbers stay
    again = run_demo(settings, Console(record=True, width=120), progress=False)
    assert again["csst_gain_miou"] == summary["csst_gain_miou"]
    assert again["vehicle_loop"]["runtime"]["harvest"]["frames"] == harvested


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


def test_the_days_frames_are_split_evenly_over_the_drives(tmp_path):
    import pytest

    from csst_edge.errors import ConfigError
    from csst_edge.pipeline.demo import drive_videos

    videos = drive_videos(DemoSettings(drives=3, video_frames=10), tmp_path)
    assert [n for _, n in videos] == [4, 3, 3]
    assert len({v for v, _ in videos}) == 3 and all(v.suffix == ".mp4" for v, _ in videos)
    with pytest.raises(ConfigError, match="drives=5, video_frames=4"):
        drive_videos(DemoSettings(drives=5, video_frames=4), tmp_path)
