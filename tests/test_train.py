"""Trainer: config resolution, epoch planning, a real training run, kill-and-resume, DDP on gloo."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import add_stray_id, run_torchrun, write_tiny_dataset
from typer.testing import CliRunner

from csst_edge.data.selection import SourceConfig, select
from csst_edge.errors import ConfigError
from csst_edge.train.checkpoint import load_checkpoint, model_from_checkpoint
from csst_edge.train.config import load_train_config
from csst_edge.train.data import EpochPlanner, build_train_set, shard_batches
from csst_edge.train.trainer import poly_lr, train


def _cfg(data_yaml, out, *extra):
    return load_train_config(
        None,
        [
            f"train=[{{data: '{data_yaml}', split: train}}]",
            f"val={{data: '{data_yaml}', split: val}}",
            "model=fastscnn",
            "epochs=2",
            "batch_size=2",
            "crop=[32,32]",
            "workers=0",
            f"out={out}",
            "augment.blur=0",
            "optim.lr=0.01",
            "log_every=1",
            *extra,
        ],
    )


def test_config_precedence_and_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"epochs": 7, "optim": {"lr": 0.1}, "crop": [64, 96]}))
    cfg = load_train_config(path, ["optim.lr=0.02", "crop=128x256"])
    assert cfg.epochs == 7 and cfg.optim.lr == 0.02 and cfg.crop == (128, 256) and cfg.batch_size == 8
    with pytest.raises(ConfigError, match="unknown config key 'optim.momentun'"):
        load_train_config(path, ["optim.momentun=0.5"])
    with pytest.raises(ConfigError, match="'crop_schedule' is 'fast'"):
        load_train_config(path, ["crop_schedule=fast"])
    with pytest.raises(ConfigError, match="'epochs' expects int"):
        load_train_config(path, ["epochs=many"])


def test_poly_lr_with_warmup():
    assert poly_lr(0.1, 0, 100, 0.9, 10, 0.1) == pytest.approx(0.01)
    assert poly_lr(0.1, 5, 100, 0.9, 10, 0.1) == pytest.approx(0.055)
    assert poly_lr(0.1, 50, 100, 0.9, 0, 0.1) == pytest.approx(0.1 * 0.5**0.9)


def test_every_fourth_selection_is_camvid_quarter(camvid_root, monkeypatch):
    monkeypatch.setenv("CSST_CAMVID_ROOT", str(camvid_root))
    labelled = build_train_set(load_train_config(None, ["train=[{data: camvid, every: 4, offset: 0}]"]).train)
    unlabelled = build_train_set(load_train_config(None, ["train=[{data: camvid, every: 4, complement: true}]"]).train)
    assert len(labelled.entries) == 92 and len(unlabelled.entries) == 275
    assert not {e.name for e in labelled.entries} & {e.name for e in unlabelled.entries}


def test_block_selection_takes_runs_of_consecutive_samples():
    names = [f"f{i:02d}" for i in range(20)]
    src = SourceConfig(data="d.yaml", every=4, offset=0, block=3)
    # runs 0-2 and 12-14 are the first of each 4 runs of 3; the rest (and a short last run) go to the complement
    assert select(names, src) == ["f00", "f01", "f02", "f12", "f13", "f14"]
    rest = select(names, SourceConfig(data="d.yaml", every=4, offset=0, block=3, complement=True))
    assert len(rest) == 14 and not set(rest) & set(select(names, src))
    # block 1 is the plain every/offset rule
    assert select(names, SourceConfig(data="d.yaml", every=4, offset=1)) == names[1::4]
    with pytest.raises(ConfigError, match="train.0.block"):
        load_train_config(None, ["train=[{data: d.yaml, every: 4, block: 0}]"])


def _second_source_as_pseudo(cfg):
    """The train set of `cfg`, its entries after the first 4 (a second tiny dataset) marked as pseudo-labelled, as
    entries from a pseudo-label folder would be."""
    ts = build_train_set(cfg.train)
    ts.entries = [
        e if i < 4 else type(e)(e.name, e.image, e.label, "pseudo", e.lut_id) for i, e in enumerate(ts.entries)
    ]
    return ts


def test_planner_mixes_real_and_pseudo_in_every_batch(tiny_dataset, tmp_path):
    other = write_tiny_dataset(tmp_path / "other", n=6, seed=1)
    cfg = _cfg(
        tiny_dataset,
        tmp_path / "run",
        f"train=[{{data: '{tiny_dataset}'}}, {{data: '{other}'}}]",
        "real_fraction=0.25",
        "samples_per_epoch=40",
        "batch_size=4",
    )
    ts = _second_source_as_pseudo(cfg)
    planner = EpochPlanner(ts, cfg)
    batches = planner.plan(epoch=0, batch_size=4)
    assert sum(len(b) for b in batches) == 40
    for b in batches:
        assert sum(ts.entries[r.entry].group == "real" for r in b) == 1
    assert planner.plan(0, 4) == batches and planner.plan(1, 4) != batches  # deterministic per (seed, epoch)
    shards = [shard_batches(batches, r, 2) for r in range(2)]
    assert all(len(s) == len(batches) for s in shards)
    seen = [ref for s in shards for b in s for ref in b]
    assert sorted(seen, key=id) and len(seen) == 40


@pytest.mark.parametrize("real_fraction", ["0.5", "null"])
def test_planner_real_only_tail_draws_only_real_labels(tiny_dataset, tmp_path, real_fraction):
    """The last round(0.25 * 8) = 2 of 8 epochs take every sample from the real group, mixed or proportional;
    the earlier epochs still draw pseudo samples, and every epoch keeps samples_per_epoch samples."""
    other = write_tiny_dataset(tmp_path / "other", n=6, seed=1)
    cfg = _cfg(
        tiny_dataset,
        tmp_path / "run",
        f"train=[{{data: '{tiny_dataset}'}}, {{data: '{other}'}}]",
        f"real_fraction={real_fraction}",
        "real_only_tail=0.25",
        "epochs=8",
        "samples_per_epoch=40",
        "batch_size=4",
    )
    ts = _second_source_as_pseudo(cfg)
    planner = EpochPlanner(ts, cfg)
    groups = [[ts.entries[r.entry].group for b in planner.plan(epoch, 4) for r in b] for epoch in range(8)]
    assert all(len(g) == 40 for g in groups)
    assert [planner.real_only(e) for e in range(8)] == [False] * 6 + [True] * 2
    assert all(g.count("pseudo") > 10 for g in groups[:6])
    assert all(g.count("pseudo") == 0 for g in groups[6:])


def test_real_only_tail_must_leave_a_mixed_epoch(tiny_dataset, tmp_path):
    with pytest.raises(ConfigError, match="real_only_tail"):
        _cfg(tiny_dataset, tmp_path / "run", "real_only_tail=1.0")


def test_train_writes_run_directory_and_learns(tiny_dataset, tmp_path):
    cfg = _cfg(tiny_dataset, tmp_path / "run", "epochs=6", "optim.lr=0.05", "crop=[48,64]", "augment.scale=[1.0,1.0]")
    result = train(cfg, progress=False)
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "eval.json"):
        assert (run / name).is_file(), name
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [line for line in lines if line["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(6))
    assert epochs[-1]["loss"] < epochs[0]["loss"]  # it learns something on an easy problem
    state = load_checkpoint(run / "best.pt")
    assert state["arch"] == "fastscnn" and state["class_names"] == ["c0", "c1", "c2"] and state["epoch"] >= 0
    model, _ = model_from_checkpoint(run / "best.pt")
    assert model(torch.zeros(1, 3, 48, 64)).shape == (1, 3, 48, 64)
    assert result.best_miou == max(e["val_miou"] for e in epochs)


def test_centroid_sampling_and_schedule_run(tiny_dataset, tmp_path):
    cfg = _cfg(
        tiny_dataset,
        tmp_path / "run",
        "sampling=centroid",
        "crop_schedule=coarse2fine+",
        "crop=[64,64]",
        "epochs=3",
        "batch_size=2",
        "max_batch=8",
        "samples_per_epoch=8",
        "val=null",
    )
    train(cfg, progress=False)
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if e["type"] == "epoch"]
    assert [e["crop"] for e in epochs] == [[32, 32], [64, 64], [64, 64]] or len({tuple(e["crop"]) for e in epochs}) > 1
    assert (tmp_path / "run" / "centroids_all.npz").is_file()


def test_cached_centroid_index_with_another_min_area_is_rebuilt(tiny_dataset, tmp_path):
    """A run directory's cached index built with min_area=1 must not survive a run with min_area=200 (it did:
    the cache was updated in place and kept its min_area and the 100-pixel class-2 blocks)."""
    from csst_edge.data.centroids import CentroidIndex, build_index

    cfg = _cfg(tiny_dataset, tmp_path / "run", "sampling=centroid", "epochs=1", "min_area=200", "val=null")
    files = [e.label for e in build_train_set(cfg.train).entries]
    stale = build_index(files, num_classes=3, min_area=1, progress=False)
    assert (stale.cls == 2).any()
    (tmp_path / "run").mkdir()
    stale.save(tmp_path / "run" / "centroids_all.npz")
    train(cfg, progress=False)
    cached = CentroidIndex.load(tmp_path / "run" / "centroids_all.npz")
    fresh = build_index(files, num_classes=3, min_area=200, progress=False)
    assert cached.min_area == 200 and not (cached.cls == 2).any()
    for key in ("image_id", "cls", "y", "x", "area"):
        assert getattr(cached, key).tolist() == getattr(fresh, key).tolist()


def _note_worker_start(folder, worker_id):
    (folder / f"worker{worker_id}_{os.getpid()}").touch()


def test_one_loader_keeps_its_workers_and_follows_the_crop_schedule(tiny_dataset, tmp_path):
    """The crop and batch size change every epoch under coarse2fine+; they reach the same worker with the indices."""
    import functools

    from csst_edge.train.schedules import CropSchedule
    from csst_edge.train.trainer import build_train_loader

    cfg = _cfg(
        tiny_dataset,
        tmp_path / "run",
        "crop_schedule=coarse2fine+",
        "crop=[64,64]",
        "max_batch=8",
        "samples_per_epoch=8",
        "workers=1",
    )
    ts = build_train_set(cfg.train)
    planner = EpochPlanner(ts, cfg)
    schedule = CropSchedule(cfg.crop_schedule, cfg.crop, cfg.batch_size, 3, cfg.crop_scales, cfg.max_batch)
    loader = build_train_loader(ts, cfg, 0, (0.5,) * 3, (0.5,) * 3, torch.device("cpu"))
    loader.worker_init_fn = functools.partial(_note_worker_start, tmp_path)
    shapes = []
    for epoch in range(4):
        ec = schedule.at(epoch)
        loader.batch_sampler.set_epoch(planner.plan(epoch, ec.batch_size), (ec.crop_h, ec.crop_w))
        shapes.append({tuple(images.shape) for images, _ in loader})
    assert shapes[0] == {(8, 3, 32, 32)} and shapes[2] == {(2, 3, 64, 64)} and shapes[3] == shapes[0]
    assert len(list(tmp_path.glob("worker0_*"))) == 1  # started once, not once per epoch


def test_cli_train_stray_class_id_is_one_clear_error(tiny_dataset, tmp_path):
    """A label id that is neither a class nor ignore, met inside a DataLoader worker: one line naming the file."""
    from csst_edge.cli.main import app

    bad = add_stray_id(tiny_dataset, "train", "img01", 200)
    overrides = ["model=fastscnn", "val=null", "epochs=1", "batch_size=2", "crop=[32,32]", "workers=1", "device=cpu"]
    result = CliRunner().invoke(
        app, ["train", f"train=[{{data: '{tiny_dataset}', split: train}}]", *overrides, f"out={tmp_path / 'run'}", "-q"]
    )
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output and "DataLoader" not in result.output, result.output
    assert str(bad) in lines[0] and "class id(s) 200" in lines[0] and "3 classes" in lines[0]
    assert "id_remap: {200: 255}" in lines[0]


@pytest.mark.parametrize("workers", [0, 1])  # with workers: one DataLoader for the run, started after resuming
def test_resume_after_stop_equals_uninterrupted(tiny_dataset, tmp_path, workers):
    full = _cfg(tiny_dataset, tmp_path / "full", "epochs=3", "val=null", f"workers={workers}")
    train(full, progress=False)
    parts = _cfg(tiny_dataset, tmp_path / "parts", "epochs=3", "val=null", f"workers={workers}")
    assert train(parts, progress=False, stop_after_epochs=1).epochs_run == 1
    assert load_checkpoint(tmp_path / "parts" / "last.pt")["epoch"] == 0
    assert train(parts, progress=False).epochs_run == 2
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "parts" / "last.pt")
    assert a["scheduler"] == b["scheduler"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_killed_process_leaves_a_resumable_checkpoint(tiny_dataset, tmp_path):
    """SIGKILL a real training process as soon as its first checkpoint exists; the file must load and resume."""
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "csst_edge",
        "train",
        f"train=[{{data: '{tiny_dataset}'}}]",
        "model=fastscnn",
        "epochs=40",
        "batch_size=2",
        "crop=[32,32]",
        "workers=0",
        f"out={out}",
        "--quiet",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import signal
    import time

    try:
        # no wall-clock budget: wait for what the process reports (its first checkpoint) or for it to end, however
        # busy the machine is; 40 epochs cannot finish before the first checkpoint appears
        while not (out / "last.pt").exists() and proc.poll() is None:
            time.sleep(0.05)
        proc.kill()
    finally:
        proc.wait()
    assert (out / "last.pt").exists(), proc.stderr.read().decode()[-2000:]
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished or crashed
    killed_at = load_checkpoint(out / "last.pt")["epoch"]  # loads: the kill left a whole file
    cfg = load_train_config(out / "config.yaml", ["epochs=" + str(killed_at + 2)])
    result = train(cfg, progress=False)
    assert result.epochs_run == 1 and load_checkpoint(out / "last.pt")["epoch"] == killed_at + 1


def test_ddp_two_processes_gloo_end_with_identical_weights(tiny_dataset, tmp_path):
    out = tmp_path / "ddp"
    done = run_torchrun(
        "train",
        f"train=[{{data: '{tiny_dataset}'}}]",
        "model=fastscnn",
        "epochs=2",
        "batch_size=4",
        "samples_per_epoch=8",
        "log_every=1",
        "crop=[32,32]",
        "workers=0",
        f"out={out}",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    check = [line for line in lines if line["type"] == "ddp_check"]
    assert check == [{"type": "ddp_check", "ranks_identical": True, "world_size": 2, "max_abs_diff": 0.0}]
    steps = [line for line in lines if line["type"] == "step"]
    assert [s["iteration"] for s in steps] == [1, 2, 3, 4]  # 8 samples / global batch 4 = 2 steps x 2 epochs
