"""benchmarks/newdrive.py: the vehicle loop's stages (teacher → deployed → control → drive → round) end to end on a tiny
synthetic stand-in for CamVid → Seq05VD (city A is home, city B the new drive), and the built-in dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmarks import newdrive
from csst_edge.data.dataset import list_samples, load_dataset_config

SHARED_NEWDRIVE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "camvid_newdrive"


def test_builtin_camvid_newdrive_resolves(monkeypatch):
    if not SHARED_NEWDRIVE.is_dir():
        pytest.skip("../shared/datasets/camvid_newdrive is not beside the checkout")
    monkeypatch.setenv("CSST_CAMVID_NEWDRIVE_ROOT", str(SHARED_NEWDRIVE))
    ds = load_dataset_config("camvid_newdrive")
    drive = list_samples(ds, "drive", require_labels=False)
    val = list_samples(ds, "val")
    assert (len(drive), len(val)) == (90, 41)
    assert all(s.label is None for s in drive)
    assert ds.class_names == load_dataset_config("camvid").class_names
    assert (ds.root / "drive.mp4").is_file()


@pytest.fixture(scope="module")
def cities(tmp_path_factory):
    from csst_edge.data.synth import write_dataset, write_video

    root = tmp_path_factory.mktemp("newdrive")
    yamls = write_dataset(root, cities=("A", "B"), train=6, val=4, height=64, width=128, seed=0, progress=False)
    city_b = yaml.safe_load(Path(yamls["B"]).read_text())
    # the new drive's layout: unlabelled `drive` frames (city B's train images) + drive.mp4 + a labelled val
    drive = {**city_b, "name": "cityB_drive", "splits": {"drive": "train", "val": "val"}}
    drive_yaml = root / "cityB_drive.yaml"
    drive_yaml.write_text(yaml.safe_dump(drive))
    write_video(root / "cityB" / "drive.mp4", city="B", frames=12, height=64, width=128, fps=1, seed=1)
    return root, Path(yamls["A"]), drive_yaml


def test_stages_run_end_to_end_and_report(cities):
    root, city_a, drive = cities
    out = root / "bench"
    args = [
        f"--out={out}", f"--home={city_a}", f"--drive={drive}", "--teacher=fastscnn", "--teacher-pretrained=none",
        "--teacher-samples=24", "--student-samples=24", "--crop=64,64", "--batch-size=4", "--max-batch=8",
        "--workers=0", "--device=cpu", "--pseudo-scales=1.0", "--no-channels-last", "--quiet",
        "--harvest-min-score=0",
    ]  # fmt: skip
    newdrive.main(args)
    state = json.loads((out / "newdrive.json").read_text())["stages"]
    assert {"teacher", "deployed", "control", "drive", "round"} <= set(state)
    # the control continues the deployed student on labels alone, for the same budget
    assert state["control"]["recipe"]["pretrained"].endswith("deployed/last.pt")
    assert state["control"]["recipe"]["method"] == "finetune" and state["control"]["deployed"] == "deployed"
    for stage in ("teacher", "deployed", "control", "round"):
        assert 0.0 <= state[stage]["newdrive"]["miou"] <= 1.0 and 0.0 <= state[stage]["camvid"]["miou"] <= 1.0
    assert state["drive"]["frames_seen"] == 12 and state["drive"]["harvest"]["frames"] >= 1
    gate = state["round"]["gate"]
    lo, hi = gate["interval"]
    assert lo <= gate["delta_miou"] <= hi and isinstance(gate["promote"], bool)
    assert state["round"]["frames"] == state["drive"]["harvest"]["frames"]
    report = (out / "newdrive.md").read_text()
    assert "round - deployed: new drive" in report and "| teacher |" in report

    # every drive frame instead of the vehicle's selection, into its own stages; the cached ones stay
    newdrive.main(args + ["--stages=drive,round", "--harvest-from=all", "--suffix=_all", "--deployed-suffix="])
    state = json.loads((out / "newdrive.json").read_text())["stages"]
    assert state["drive_all"]["harvest"]["frames"] == 12
    assert state["round_all"]["frames"] == 12 and state["round_all"]["deployed"] == "deployed"
    assert "round" in state
    # ... but never into the vehicle's own harvest folder, which would then mix both
    own = (out / "harvest" / "manifest.jsonl").read_text()
    with pytest.raises(SystemExit, match="would add frames to the vehicle's harvest"):
        newdrive.main(
            args + ["--stages=drive", "--harvest-from=all", "--suffix=_x", "--deployed-suffix=", "--harvest-suffix="]
        )
    assert (out / "harvest" / "manifest.jsonl").read_text() == own


def test_recipe_options_parse_and_bad_stage_is_an_error(capsys):
    r = newdrive.parse_args(["--real-fraction=none", "--pseudo-scales=1.0,1.5", "--stages=round", "--suffix=_x"])
    assert r.real_fraction is None and r.pseudo_scales == (1.0, 1.5) and r.stages == ("round",)
    assert r.deployed_name == "deployed_x" and r.harvest_name == "harvest_x"
    with pytest.raises(SystemExit):
        newdrive.parse_args(["--stages=teacher,oracle"])
    assert "--stages: unknown oracle; choose from teacher" in capsys.readouterr().err
