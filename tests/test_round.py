"""`csst-edge round`: merge + dedup of harvest folders, the gate (a better student is promoted, a worse one
rejected), and a whole tiny round (1 epoch) ending in a report and an exported model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import add_stray_id, probs_meta, write_tiny_dataset
from typer.testing import CliRunner

from csst_edge.data.imageio import read_image
from csst_edge.errors import ConfigError
from csst_edge.evaluate.bootstrap import paired_bootstrap
from csst_edge.pipeline.round import RoundError, RoundSettings, gate_decision, merge_harvests, run_round
from csst_edge.runtime.harvest import Harvester, HarvestSettings
from csst_edge.runtime.postprocess import Prediction
from csst_edge.runtime.sources import Frame

H, W = 64, 128
NAMES = ["c0", "c1", "c2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny labelled dataset, a trained student ('good'), an untrained one ('bad') and two harvest folders."""
    from csst_edge.models import create_model
    from csst_edge.train.checkpoint import save_checkpoint
    from csst_edge.train.config import load_train_config
    from csst_edge.train.trainer import train

    root = tmp_path_factory.mktemp("round")
    data = write_tiny_dataset(root / "tiny", n=4, size=(H, W), num_classes=3)
    common = [
        f"train=[{{data: '{data}', split: train}}]",
        "val=null",
        "crop=[64,64]",
        "batch_size=4",
        "workers=0",
        "device=cpu",
        "samples_per_epoch=16",
        "augment.scale=[0.75,1.25]",
        "optim.lr=0.05",
        "log_every=0",
        "model=fastscnn",
    ]
    train(load_train_config(None, common + ["epochs=6", f"out={root / 'good'}"]), progress=False)
    torch.manual_seed(0)
    bad = create_model("fastscnn", 3).eval()
    save_checkpoint(
        root / "bad.pt",
        {
            "model": bad.state_dict(),
            "arch": "fastscnn",
            "num_classes": 3,
            "class_names": NAMES,
            "palette": [[0, 0, 0], [255, 0, 0], [0, 0, 255]],
            "config": json.loads(json.dumps(torch.load(root / "good" / "last.pt", weights_only=True)["config"])),
        },
    )
    images = sorted((root / "tiny" / "images" / "val").glob("*.png"))
    harvests = [_harvest(root / "car1", images[:3], "car1"), _harvest(root / "car2", images[2:], "car2")]
    return {"root": root, "data": data, "good": root / "good" / "last.pt", "bad": root / "bad.pt", "harvests": harvests}


def _harvest(folder: Path, images: list[Path], vehicle: str, start: int = 0) -> Path:
    meta = probs_meta(H, W, NAMES)
    h = Harvester(
        folder,
        meta,
        HarvestSettings(rate_per_min=0, min_score=0.0, min_sharpness=0.0, duplicate_similarity=1.0, vehicle=vehicle),
        class_frequencies=np.ones(3),
    )
    for i, path in enumerate(images, start):
        image = read_image(path)
        h.consider(
            Frame(i, image, float(i), 1.7e9 + i, path.name),
            image,
            Prediction(np.full((3, H, W), 1 / 3, np.float32), meta),
        )
    h.close()
    return folder


def test_gate_rules():
    before = {"miou": 0.50, "per_class_iou": [0.6, 0.5, 0.4]}
    better = {"miou": 0.55, "per_class_iou": [0.7, 0.55, 0.4]}
    worse = {"miou": 0.45, "per_class_iou": [0.5, 0.45, 0.4]}
    slightly = {"miou": 0.497, "per_class_iou": [0.75, 0.5, 0.241]}
    assert gate_decision(before, better, NAMES).promote
    assert not gate_decision(before, worse, NAMES).promote
    assert not gate_decision(before, slightly, NAMES).promote  # margin 0: any regression is rejected
    assert gate_decision(before, slightly, NAMES, margin=0.005).promote
    rejected = gate_decision(before, slightly, NAMES, gate="per-class", margin=0.005, class_margin=0.05)
    assert not rejected.promote and rejected.regressed_classes == ["c2"]
    assert gate_decision(before, worse, NAMES, gate="always").promote
    # new rule: the lower end must be strictly above -margin, so an unchanged student is not promoted at margin 0
    same = gate_decision(before, before, NAMES)
    assert not same.promote and same.verdict == "no detectable change"
    assert gate_decision(before, before, NAMES, margin=0.001).promote
    with pytest.raises(ConfigError, match="--gate"):
        gate_decision(before, better, NAMES, gate="best")


def test_gate_with_interval_decides_on_the_lower_end():
    """A +0.05-point change whose interval spans 0 is 'no detectable change' and is not promoted at margin 0
    (the old point-estimate gate promoted it); with a margin wider than the interval's low side it is."""
    rng = np.random.default_rng(0)
    mats = np.zeros((24, 3, 3), np.int64)
    for i in range(24):
        np.add.at(mats[i], (rng.integers(0, 3, 300), rng.integers(0, 3, 300)), 1)
    other = mats.copy()
    other[::2, 0, 0] += 3  # the new student is a little better on some images ...
    other[1::2, 0, 1] += 3  # ... and a little worse on others
    interval = paired_bootstrap(mats, other, NAMES)
    before = {"miou": 0.50, "per_class_iou": [0.5, 0.5, 0.5]}
    after = {"miou": 0.5005, "per_class_iou": [0.5, 0.5, 0.5]}
    assert interval.low < 0 < interval.high
    rejected = gate_decision(before, after, NAMES, interval=interval)
    assert not rejected.promote and rejected.verdict == "no detectable change"
    assert "interval" in rejected.reason and "no detectable change" in rejected.reason
    assert (rejected.low, rejected.high) == (interval.low, interval.high)
    assert gate_decision(before, after, NAMES, margin=-interval.low + 1e-6, interval=interval).promote


def test_gate_on_real_checkpoints(world):
    """The trained student beats the untrained one on the val set: its paired-bootstrap interval lies above 0, it is
    promoted over it, and rejected in its place; a student against itself gets exactly [0, 0]."""
    from csst_edge.evaluate.checkpoint_eval import evaluate_checkpoint

    good, _ = evaluate_checkpoint(world["good"], world["data"], "val", "cpu", 0, per_image=True)
    bad, _ = evaluate_checkpoint(world["bad"], world["data"], "val", "cpu", 0, per_image=True)
    assert good["miou"] > bad["miou"]
    assert good["names"] == bad["names"] and good["per_image_confusion"].shape == (4, 3, 3)
    up = paired_bootstrap(bad["per_image_confusion"], good["per_image_confusion"], NAMES)
    assert up.low > 0 and up.verdict == "better" and up.delta_miou == pytest.approx(good["miou"] - bad["miou"])
    down = paired_bootstrap(good["per_image_confusion"], bad["per_image_confusion"], NAMES)
    assert down.high < 0 and down.verdict == "worse"
    same = paired_bootstrap(good["per_image_confusion"], good["per_image_confusion"], NAMES)
    assert (same.low, same.high) == (0.0, 0.0) and same.verdict == "no detectable change"
    assert gate_decision(bad, good, NAMES, interval=up).promote
    assert not gate_decision(good, bad, NAMES, interval=down).promote
    assert not gate_decision(good, good, NAMES, interval=same).promote


def test_merge_deduplicates_across_vehicles(world, tmp_path):
    merged = merge_harvests(world["harvests"], tmp_path / "frames")
    per = merged["per_harvest"]
    assert merged["kept"] == 4  # 3 + 2 frames, one of them seen by both cars
    assert sum(v["duplicates"] for v in per.values()) == 1
    assert len(list((tmp_path / "frames").rglob("*.jpg"))) == 4


def test_round_index_does_not_reuse_an_index_built_with_another_min_area(tmp_path):
    """The previous round's index (`--index`) built with min_area=200 used to be updated in place, so the round's
    index kept min_area=200 when it had one and 1 when it had none."""
    from csst_edge.data.centroids import CentroidIndex, build_index
    from csst_edge.data.dataset import list_samples, load_dataset_config
    from csst_edge.pipeline.round import update_round_index

    data = write_tiny_dataset(tmp_path / "tiny", n=3, size=(H, W), num_classes=3)
    files = [s.label for s in list_samples(load_dataset_config(str(data)), "train")]
    build_index(files, num_classes=3, min_area=200, progress=False).save(tmp_path / "previous.npz")
    settings = RoundSettings(
        [], Path("t.pt"), Path("s.pt"), str(data), str(data), tmp_path, index=tmp_path / "previous.npz"
    )
    info = update_round_index(settings, [], tmp_path / "centroids.npz")
    index = CentroidIndex.load(tmp_path / "centroids.npz")
    fresh = build_index(files, num_classes=3, progress=False)
    assert index.min_area == 1 and info["read"] == 3 and info["reused"] == 0
    assert index.cls.tolist() == fresh.cls.tolist() and index.area.tolist() == fresh.area.tolist()


def test_cli_round_stray_class_id_is_one_clear_error(world, tmp_path):
    """A train label id that is neither a class nor ignore stops the round at its centroid index, in one line."""
    from csst_edge.cli.main import app

    data = write_tiny_dataset(tmp_path / "tiny", n=2, size=(H, W), num_classes=3)
    bad = add_stray_id(data, "train", "img01", 200)
    harvest = [str(world["harvests"][0])]
    models = ["--teacher", str(world["good"]), "--student", str(world["bad"])]
    rest = ["--data", str(data), "--val", str(data), "-o", str(tmp_path / "r"), "--device", "cpu", "--workers", "0"]
    result = CliRunner().invoke(app, ["round", *harvest, *models, *rest, "--no-flip", "-q"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert str(bad) in lines[0] and "class id(s) 200" in lines[0] and "3 classes" in lines[0]
    assert "id_remap: {200: 255}" in lines[0]


@pytest.mark.slow  # ~25 s: pseudo-label, index, 1 epoch, two evaluations, export
def tiny_round(world, harvests: list, out: Path, **kw) -> RoundSettings:
    """A one-epoch round of the untrained student on the tiny world, the trained one as teacher."""
    return RoundSettings(
        harvests=harvests,
        teacher=world["good"],
        student=world["bad"],
        data=str(world["data"]),
        val=str(world["data"]),
        out=out,
        epochs=1,
        workers=0,
        device="cpu",
        overrides=["samples_per_epoch=8", "log_every=0"],
        **kw,
    )


def test_round_end_to_end(world, tmp_path):
    out = tmp_path / "r01"
    settings = tiny_round(world, world["harvests"], out, gate="miou")
    report = run_round(settings, progress=False)
    saved = json.loads((out / "round.json").read_text())
    assert saved["decision"]["promote"] == report["decision"]["promote"]
    assert saved["data_added"]["frames_kept"] == 4 and saved["data_added"]["pseudo_labels"]["images"] == 4
    assert len(saved["before"]["per_class_iou"]) == len(saved["after"]["per_class_iou"]) == 3
    assert saved["centroid_index"]["images"] == 4 + 4  # labelled train split + the round's pseudo labels
    md = (out / "round.md").read_text()
    assert "Decision" in md and "current student" in md and "new student" in md
    d = saved["decision"]
    low, high = d["interval"]
    assert low <= high and d["verdict"] in ("better", "worse", "no detectable change")
    assert d["promote"] == (low > 0) and d["bootstrap"]["images"] == 4 and len(d["bootstrap"]["per_class"]) == 3
    assert "95 % interval" in md and d["verdict"] in md
    if report["decision"]["promote"]:
        _check_export(out)
    else:
        assert not (out / "promoted").exists()


def test_rounds_accumulate_pseudo_folders_and_the_index(world, tmp_path):
    """Round 2 with `previous=round 1` trains on round 1's pseudo labels as well as its own, and updates round 1's
    centroid index, so it never trains on less than round 1 did; a folder that is not a round is a clear error."""
    import yaml

    def settings(harvest, out, **kw):
        return tiny_round(world, [harvest], out, pseudo_scales=(), **kw)

    first = run_round(settings(world["harvests"][0], tmp_path / "r01"), progress=False)
    second = run_round(settings(world["harvests"][1], tmp_path / "r02", previous=tmp_path / "r01"), progress=False)
    sources = yaml.safe_load((tmp_path / "r02" / "student" / "config.yaml").read_text())["train"]
    pseudo = [s["pseudo"] for s in sources if s.get("pseudo")]
    assert pseudo == [str(tmp_path / "r02" / "pseudo"), str(tmp_path / "r01" / "pseudo")]
    assert second["pseudo_folders"] == pseudo
    # the index holds the train split, round 1's and round 2's pseudo labels; round 1's entries were reused
    assert first["centroid_index"]["images"] == 4 + 3
    assert second["centroid_index"]["images"] == 4 + 3 + 2
    # the round's defaults: centroid sampling, half real / half pseudo, continuing the current student
    config = yaml.safe_load((tmp_path / "r02" / "student" / "config.yaml").read_text())
    assert config["sampling"] == "centroid" and config["real_fraction"] == 0.5 and config["method"] == "finetune"
    assert config["pretrained"] == str(world["bad"])  # the current student: tiny_round starts from world["bad"]
    # round 3 from round 2 keeps both earlier pseudo folders, each once
    from csst_edge.pipeline.round import carried_over

    folders, index = carried_over(tmp_path / "r02", [str(tmp_path / "r01" / "pseudo")], None)
    assert folders == pseudo and index == tmp_path / "r02" / "centroids.npz"
    with pytest.raises(RoundError, match="not a finished round folder"):
        run_round(settings(world["harvests"][1], tmp_path / "r03", previous=tmp_path / "nothing"), progress=False)


@pytest.mark.slow
def test_round_gate_always_exports_from_the_current_student(world, tmp_path):
    from csst_edge.runtime import load_backend

    out = tmp_path / "r02"
    settings = RoundSettings(
        harvests=world["harvests"][:1],
        teacher=world["good"],
        student=world["good"],
        data=str(world["data"]),
        val=str(world["data"]),
        out=out,
        epochs=1,
        workers=0,
        device="cpu",
        gate="always",
        init="student",
        export_size=(H, W),
        overrides=["samples_per_epoch=8", "log_every=0"],
    )
    report = run_round(settings, progress=False)
    assert report["decision"]["promote"] and report["export"]["size"] == [H, W]
    _check_export(out)
    backend = load_backend(out / "promoted" / "student.onnx", providers="cpu")
    assert backend.meta.output_kind == "probs"
    with pytest.raises(RoundError, match="not a harvest folder"):
        run_round(
            RoundSettings(
                harvests=[tmp_path],
                teacher=world["good"],
                student=world["good"],
                data=str(world["data"]),
                val=str(world["data"]),
                out=out,
            ),
            progress=False,
        )


def _check_export(out: Path) -> None:
    from csst_edge.runtime import load_backend

    onnx_path = out / "promoted" / "student.onnx"
    assert onnx_path.is_file() and (out / "promoted" / "student.pt").is_file()
    frame = cv2.resize(np.zeros((10, 10, 3), np.uint8), (W, H))
    out_probs = load_backend(onnx_path, providers="cpu").infer(frame)
    assert out_probs.shape == (1, 3, H, W)


# ------------------------------------------------------------------------------------------ harvests in a bucket
def test_harvests_in_a_bucket_merge_as_local_ones_do(world, tmp_path, s3_bucket, monkeypatch):
    """A URL harvest (`runtime run --harvest s3://...`: staged locally, mirrored on close), a `runtime sync`
    vehicle prefix (images/<sha>.jpg + manifest/<sha>.json rows) and the destination holding it merge to the same
    frames as the local folders."""
    import hashlib

    from csst_edge import storage
    from csst_edge.pipeline.round import expand_harvest_sources
    from csst_edge.runtime.harvest import read_harvest_records

    monkeypatch.setenv("CSST_CACHE", str(tmp_path / "cache"))
    images = sorted((world["root"] / "tiny" / "images" / "val").glob("*.png"))
    car1 = _harvest(f"{s3_bucket}/fleet/car1/harvest", images[:3], "car1")
    assert storage.isfile(f"{car1}/manifest.jsonl") and len(storage.find(f"{car1}/images")) == 3
    # a later run on the same URL continues that harvest, even from a fresh staging folder (it pulls it first)
    monkeypatch.setenv("CSST_CACHE", str(tmp_path / "cache2"))
    _harvest(car1, images[3:], "car1", start=3)
    assert len(read_harvest_records(car1)) == 4 and len(storage.find(f"{car1}/images")) == 4
    # car2 as `runtime sync` lays it out
    synced = f"{s3_bucket}/synced/car2"
    for record in read_harvest_records(world["harvests"][1]):
        data = (world["harvests"][1] / record["image"]).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        storage.write_bytes(f"{synced}/images/{sha}.jpg", data)
        storage.write_json(f"{synced}/manifest/{sha}.json", {**record, "image": f"images/{sha}.jpg", "sha256": sha})
    assert expand_harvest_sources([f"{s3_bucket}/synced"]) == [synced]
    local = merge_harvests(world["harvests"], tmp_path / "local")
    remote = merge_harvests(expand_harvest_sources([car1, f"{s3_bucket}/synced"]), tmp_path / "remote")
    assert remote["kept"] == local["kept"] == 4
    assert sorted(f.read_bytes() for f in (tmp_path / "remote").rglob("*.jpg")) == sorted(
        f.read_bytes() for f in (tmp_path / "local").rglob("*.jpg")
    )
    assert set(remote["per_harvest"]) == {car1, synced}
    with pytest.raises(RoundError, match="not a harvest folder"):
        expand_harvest_sources([f"{s3_bucket}/nothing-here"])
