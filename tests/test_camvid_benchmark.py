"""benchmarks/camvid_csst.py: its stages end to end, the pseudo-label quality diagnostic and the report, on a tiny
dataset."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import write_tiny_dataset

from benchmarks import camvid_csst
from csst_edge.data.dataset import list_samples, load_dataset_config


@pytest.fixture(scope="module")
def bench():
    return camvid_csst


def test_stages_run_end_to_end_resume_and_report(tmp_path):
    """teacher -> pseudo -> baseline -> csst on 8 tiny train images (2 labelled, 6 'unlabelled'); a rerun of a
    finished stage trains nothing and keeps its record."""
    data = write_tiny_dataset(tmp_path / "ds", n=8, size=(64, 96))
    out = tmp_path / "bench"
    args = [
        f"--out={out}", f"--data={data}", "--teacher=fastscnn", "--budget=0.0005", "--crop=64,64", "--batch=4",
        "--max-batch=8", "--workers=0", "--device=cpu", "--pseudo-scales=1.0", "--stages=teacher,pseudo,baseline,csst",
        "-q",
    ]  # fmt: skip
    camvid_csst.main(args)
    state = json.loads((out / "camvid_csst.json").read_text())
    assert (state["labelled"], state["unlabelled"]) == (2, 6)
    stages = state["stages"]
    assert {"teacher", "pseudo", "baseline", "csst"} <= set(stages)
    assert stages["pseudo"]["images"] == 6 and 0.0 <= stages["pseudo"]["quality"]["miou"] <= 1.0
    # 30 samples of the 8-image epoch -> 4 epochs for every student; the teacher's epochs are of its 2 labels
    assert stages["baseline"]["recipe"]["epochs"] == 4 and stages["baseline"]["recipe"]["samples_per_epoch"] == 8
    assert stages["teacher"]["recipe"]["epochs"] == 15 and stages["teacher"]["recipe"]["samples_per_epoch"] == 2
    assert stages["csst"]["recipe"]["sampling"] == "centroid" and stages["csst"]["pseudo_labels"] == "pseudo"
    assert stages["baseline"]["recipe"]["sampling"] == "random"
    for name in ("teacher", "baseline", "csst"):
        assert 0.0 <= stages[name]["miou"] <= 1.0
    assert "CSST - baseline:" in (out / "camvid_csst.md").read_text()
    log = (out / "baseline" / "metrics.jsonl").read_text()
    camvid_csst.main(args[:-2] + ["--stages=baseline", "-q"])
    assert (out / "baseline" / "metrics.jsonl").read_text() == log  # finished: nothing trained again
    assert json.loads((out / "camvid_csst.json").read_text())["stages"]["teacher"] == stages["teacher"]


def test_recipe_options_and_bad_values(capsys):
    r = camvid_csst.parse_args(["--crop=96,128", "--pseudo-scales=1.0,1.5", "--stages=csst", "--no-channels-last"])
    assert r.crop == (96, 128) and r.pseudo_scales == (1.0, 1.5) and r.stages == ("csst",)
    assert r.mix == {"real_fraction": 0.5, "real_only_tail": 0.0}
    assert camvid_csst.parse_args(["--real-fraction=proportional"]).mix["real_fraction"] is None
    with pytest.raises(SystemExit):
        camvid_csst.parse_args(["--stages=teacher,csst_sometimes"])
    assert "--stages: unknown csst_sometimes" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--real-fraction: 'half'"):
        camvid_csst.parse_args(["--real-fraction=half"])
    with pytest.raises(SystemExit, match="--block must be >= 1"):
        camvid_csst.parse_args(["--block=0"])


def test_pseudo_label_quality_scores_against_the_withheld_ground_truth(tmp_path, bench):
    ds = load_dataset_config(write_tiny_dataset(tmp_path / "tiny", splits=("train",), n=2, size=(16, 16)))
    samples = list_samples(ds, "train")
    pseudo = tmp_path / "pseudo"
    (pseudo / "labels").mkdir(parents=True)
    entries = []
    for i, s in enumerate(samples):
        gt = cv2.imread(str(s.label), cv2.IMREAD_UNCHANGED)
        pred = gt.copy()
        if i == 1:  # the second image: every class-1 pixel called class 0, and one pixel left unlabelled
            pred[gt == 1] = 0
            pred[0, 0] = 255
        cv2.imwrite(str(pseudo / "labels" / f"p{i}.png"), pred)
        entries.append({"image": str(s.image), "label": f"labels/p{i}.png", "status": "ok"})
    entries.append({"image": "/nowhere/broken.jpg", "label": None, "status": "unreadable"})
    (pseudo / "manifest.jsonl").write_text("\n".join(json.dumps(e) for e in entries) + "\n")

    quality = bench.pseudo_label_quality(ds, samples, pseudo)

    gts = [cv2.imread(str(s.label), cv2.IMREAD_UNCHANGED) for s in samples]
    # hand count: image 0 is perfect; image 1 turns class 1 into 0 and skips pixel (0, 0)
    counted1 = np.ones((16, 16), bool)
    counted1[0, 0] = False
    g0 = lambda c: int((gts[0] == c).sum())  # noqa: E731
    g1 = lambda c: int(((gts[1] == c) & counted1).sum())  # noqa: E731
    tp = {0: g0(0) + g1(0), 1: g0(1), 2: g0(2) + g1(2)}
    gt_total = {c: g0(c) + g1(c) for c in range(3)}
    pred_total = {0: g0(0) + g1(0) + g1(1), 1: g0(1), 2: g0(2) + g1(2)}
    expected = [tp[c] / (gt_total[c] + pred_total[c] - tp[c]) for c in range(3)]
    assert quality["per_class_iou"] == pytest.approx(expected)
    assert quality["miou"] == pytest.approx(sum(expected) / 3)
    assert quality["miou"] < 1.0
    # coverage: of the ground-truth-labelled pixels, all but the one left unlabelled kept a pseudo label
    valid = sum(int((g != ds.ignore_index).sum()) for g in gts)
    skipped = int(gts[1][0, 0] != ds.ignore_index)
    assert skipped == 1 and quality["coverage"] == pytest.approx((valid - skipped) / valid)


def test_oracle_labels_are_the_ground_truth_as_a_pseudo_label_folder(tmp_path, bench):
    import yaml

    from csst_edge.data.selection import SourceConfig
    from csst_edge.train.data import build_train_set

    yaml_path = write_tiny_dataset(tmp_path / "tiny", splits=("train",), n=4, size=(16, 16))
    cfg = yaml.safe_load(yaml_path.read_text())
    cfg["id_remap"] = {7: 255}  # a void id, as CamVid's 11
    yaml_path.write_text(yaml.safe_dump(cfg))
    void = yaml_path.parent / "labels" / "train" / "img01.png"
    label = cv2.imread(str(void), cv2.IMREAD_UNCHANGED)
    label[:3, :5] = 7
    cv2.imwrite(str(void), label)
    ds = load_dataset_config(yaml_path)
    samples = list_samples(ds, "train")

    folder = bench.write_oracle_labels(ds, samples[1:], tmp_path / "oracle")

    written = cv2.imread(str(folder / "labels" / "img01.png"), cv2.IMREAD_UNCHANGED)
    assert (written[:3, :5] == 255).all() and written[5:, 5:].max() < 3
    assert bench.pseudo_label_quality(ds, samples, folder)["miou"] == pytest.approx(1.0)
    # training reads it as it reads the teacher's pseudo labels: the three images, in the pseudo group
    train_set = build_train_set([SourceConfig(data=str(yaml_path)), SourceConfig(pseudo=str(folder))])
    assert sorted(e.name for e in train_set.entries if e.group == "pseudo") == ["img01", "img02", "img03"]
    # a finished folder is reused, not rewritten
    stamp = (folder / "manifest.jsonl").stat().st_mtime_ns
    bench.write_oracle_labels(ds, samples[1:], folder)
    assert (folder / "manifest.jsonl").stat().st_mtime_ns == stamp


def test_report_lists_stages_rare_classes_and_the_gain(tmp_path, bench):
    names = ["sky", "pole", "sign", "fence", "pedestrian", "bicyclist"]
    stage = lambda miou, rare: {
        "miou": miou,
        "per_class_iou": [0.9] + [rare] * 5,
        "class_names": names,  # noqa: E731
        "wall_s": 10.0,
    }
    state = {
        "budget": 0.25,
        "teacher_budget": 0.4,
        "teacher": "icnet_r18",
        "student": "fastscnn",
        "labelled": 92,
        "unlabelled": 275,
        "stages": {
            "baseline": stage(0.40, 0.10),
            "csst": stage(0.45, 0.20),
            "csst_nocs": stage(0.42, 0.12),
            "baseline_s1": stage(0.41, 0.10),
            "csst_s1": stage(0.44, 0.15),
            "csst_s1_tail": stage(0.46, 0.15),
            "oracle_s1": stage(0.50, 0.30),
            "oracle_nocs_s1": stage(0.49, 0.25),
            "supervised": stage(0.415, 0.12),
            "pseudo": {"wall_s": 3.0, "quality": {"miou": 0.5, "per_class_iou": [0.5] * 6}},
            "pseudo_tta": {"single": {"miou": 0.47}, "flip": {"miou": 0.48}, "wall_s": 1.0},
        },
    }
    state["stages"]["csst_s1"]["recipe"] = {
        "model": "fastscnn",
        "crop_schedule": "constant",
        "seed": "1",
        "epochs": "16",
        "samples_per_epoch": "367",
    }
    bench.write_report(state, tmp_path)
    text = (tmp_path / "camvid_csst.md").read_text()
    assert "| baseline | 40.0 | 10.0 | 10 |" in text
    assert "| csst | 45.0 | 20.0 | 10 |" in text
    assert "| csst_s1 | 44.0 | 15.0 | 10 | fastscnn, constant, 5872 samples, seed 1 |" in text
    assert "| pseudo labels vs GT |" in text and "CSST - baseline: +5.0 mIoU" in text
    # every student set gets its own gain line, and centroid sampling its rare-5 effect where both ran
    assert "CSST_s1 - baseline_s1: +3.0 mIoU" in text
    # a CSST variant without a baseline of its own is compared with the one of the longest matching suffix
    assert "CSST_s1_tail - baseline_s1: +5.0 mIoU" in text
    assert "centroid sampling: rare-5 20.0 vs 12.0 without (+8.0), mIoU +3.0" in text
    assert "centroid sampling_s1" not in text
    # the oracle is not a CSST run: its own line, against its baseline
    assert "oracle_s1 (CSST on the ground truth) - baseline_s1: +9.0 mIoU" in text
    assert "CSST_oracle" not in text
    # the oracle without centroid sampling: a centroid-sampling line of its own, and no ceiling line
    assert "centroid sampling on the ground truth_s1: rare-5 30.0 vs 25.0 without (+5.0), mIoU +1.0" in text
    assert "oracle_nocs_s1 (CSST on the ground truth)" not in text and "- baseline_nocs" not in text
    assert "supervised (every train label) - baseline: +1.5 mIoU" in text
    assert "single scale 47.0, flip 48.0, multi-scale + flip 50.0 mIoU" in text


def test_trained_seconds_counts_each_epoch_once_across_a_resume(tmp_path, bench):
    log = tmp_path / "metrics.jsonl"
    records = [
        {"type": "step", "epoch": 0, "iteration": 10, "loss": 1.0},
        {"type": "epoch", "epoch": 0, "time_s": 20.0},
        {"type": "epoch", "epoch": 1, "time_s": 30.5},
        {"type": "step", "epoch": 2, "iteration": 30, "loss": 0.9},  # killed here, mid-epoch 2
        {"type": "epoch", "epoch": 1, "time_s": 31.0},  # a resumption that logged epoch 1 again
        {"type": "epoch", "epoch": 2, "time_s": 25.0},
    ]
    log.write_text("\n".join(json.dumps(r) for r in records) + '\n{"type": "epo')  # the last line cut by a kill
    assert bench.trained_seconds(log) == pytest.approx(20.0 + 31.0 + 25.0)
    assert bench.trained_seconds(tmp_path / "missing.jsonl") == 0.0


def test_val_curves_plot_each_student_against_samples_trained(tmp_path, bench):
    names = ["sky", "pole", "sign", "fence", "pedestrian", "bicyclist"]
    recipe = {"model": "fastscnn", "seed": "0", "epochs": "4", "samples_per_epoch": "500"}
    state = {
        "budget": 0.1,
        "teacher": "deeplabv3plus_lite0",
        "student": "fastscnn",
        "labelled": 92,
        "unlabelled": 275,
        "stages": {},
    }
    for name, curve in {"baseline": [0.30, 0.40], "csst": [0.25, 0.45], "teacher": [0.5, 0.6]}.items():
        run = tmp_path / name
        run.mkdir()
        lines = [
            {"type": "epoch", "epoch": 0, "time_s": 1.0},
            {"type": "epoch", "epoch": 1, "time_s": 1.0, "val_miou": curve[0]},
            {"type": "epoch", "epoch": 2, "time_s": 1.0},
            {"type": "epoch", "epoch": 3, "time_s": 1.0, "val_miou": curve[1]},
        ]
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
        state["stages"][name] = {
            "miou": curve[1],
            "per_class_iou": [curve[1]] * 6,
            "class_names": names,
            "wall_s": 4.0,
            "recipe": recipe,
        }
    assert bench.val_curve(tmp_path / "csst" / "metrics.jsonl") == [(1, 0.25), (3, 0.45)]

    bench.write_report(state, tmp_path)

    image = cv2.imread(str(tmp_path / "camvid_csst_curves.png"))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 300
    assert "camvid_csst_curves.png" in (tmp_path / "camvid_csst.md").read_text()
    # no student with a logged curve: no plot, and the report says nothing of one
    (tmp_path / "camvid_csst_curves.png").unlink()
    for name in ("baseline", "csst"):
        (tmp_path / name / "metrics.jsonl").unlink()
    bench.write_report(state, tmp_path)
    assert not (tmp_path / "camvid_csst_curves.png").exists()
    assert "curves" not in (tmp_path / "camvid_csst.md").read_text()
