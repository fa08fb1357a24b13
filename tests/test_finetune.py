"""Few-shot transfer: deterministic nested shots, head replacement on class-count change, resumable k sweep."""

import json

import pytest
import torch
import typer
from conftest import write_tiny_dataset
from typer.testing import CliRunner

from csst_edge.cli.common import ErrorHandlingGroup
from csst_edge.cli.finetune import finetune_command
from csst_edge.data.selection import SourceConfig, select, select_shots
from csst_edge.errors import CheckpointError, ConfigError
from csst_edge.models import create_model
from csst_edge.pipeline.fewshot import parse_shots, run_finetune
from csst_edge.train.checkpoint import load_checkpoint, save_checkpoint
from csst_edge.train.config import load_train_config
from csst_edge.train.finetune import load_for_finetune


def _checkpoint(path, arch="fastscnn", num_classes=3, seed=0, class_names=None):
    torch.manual_seed(seed)
    model = create_model(arch, num_classes)
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "arch": arch,
            "model_kwargs": {},
            "num_classes": num_classes,
            "class_names": class_names or [f"c{i}" for i in range(num_classes)],
        },
    )
    return model


def test_shots_are_deterministic_nested_and_order_free():
    names = [f"img{i:03d}" for i in range(40)]
    sets = {k: select_shots(names, k, seed=3) for k in (1, 2, 5, 10)}
    assert sets[10] == select_shots(list(reversed(names)), 10, seed=3)  # listing order does not matter
    assert all(set(sets[a]) <= set(sets[b]) for a, b in [(1, 2), (2, 5), (5, 10)])
    assert [len(v) for v in sets.values()] == [1, 2, 5, 10] and sets[10] == sorted(sets[10])
    assert select_shots(names, 10, seed=4) != sets[10]
    with pytest.raises(ConfigError, match="shots=41 but it has only 40"):
        select_shots(names, 41)
    assert parse_shots("10, 1,2,5,2") == (1, 2, 5, 10)
    with pytest.raises(ConfigError, match="--shots"):
        parse_shots("1,x")


def test_source_config_shots_select_after_every_offset():
    names = [f"n{i:02d}" for i in range(20)]
    src = SourceConfig(data="d.yaml", every=2, offset=1, shots=3, shots_seed=1)
    picked = select(names, src)
    assert picked == select_shots(names[1::2], 3, 1) and all(int(n[1:]) % 2 == 1 for n in picked)
    with pytest.raises(ConfigError, match="train.0.shots"):
        load_train_config(None, ["train=[{data: d.yaml, shots: 0}]"])


def test_three_class_checkpoint_into_five_class_model_replaces_only_the_head(tmp_path):
    source = _checkpoint(tmp_path / "c3.pt", num_classes=3, seed=0)
    torch.manual_seed(1)
    target = create_model("fastscnn", 5)
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    replaced = load_for_finetune(target, tmp_path / "c3.pt", arch="fastscnn")
    src, new = source.state_dict(), target.state_dict()
    class_dependent = sorted(k for k in new if new[k].shape != src[k].shape)
    assert replaced == class_dependent and len(replaced) >= 4  # main and aux classifiers: weight + bias each
    assert any(k.startswith("aux") for k in replaced) and any(not k.startswith("aux") for k in replaced)
    for k, v in new.items():
        assert torch.equal(v, fresh[k] if k in replaced else src[k]), k
    # same class count: nothing is replaced, the model equals the checkpoint
    same = create_model("fastscnn", 3)
    assert load_for_finetune(same, tmp_path / "c3.pt") == []
    assert all(torch.equal(v, src[k]) for k, v in same.state_dict().items())


def test_wrong_arch_is_a_checkpoint_error_naming_the_file(tmp_path):
    _checkpoint(tmp_path / "fast.pt")
    with pytest.raises(CheckpointError, match="fast.pt.*arch 'fastscnn'"):
        load_for_finetune(create_model("bisenet_r18", 3), tmp_path / "fast.pt", arch="bisenet_r18")
    with pytest.raises(CheckpointError, match="fast.pt"):  # no arch given: too little (or nothing) fits
        load_for_finetune(create_model("bisenet_r18", 3), tmp_path / "fast.pt")


def test_run_finetune_writes_table_and_rerun_skips_finished_k(tmp_path):
    target_data = write_tiny_dataset(tmp_path / "tgt", n=3, seed=5)  # 3 classes
    _checkpoint(tmp_path / "teacher.pt", num_classes=5)  # e.g. a source domain with more classes
    out = tmp_path / "fs"
    common = dict(
        shots=(1, 2),
        epochs=1,
        out=out,
        seed=0,
        batch_size=2,
        crop=(32, 32),
        device="cpu",
        overrides=["workers=0", "augment.blur=0", "log_every=0"],
        progress=False,
    )
    report = run_finetune(tmp_path / "teacher.pt", target_data, **common)
    saved = json.loads((out / "finetune.json").read_text())
    assert [r["k"] for r in saved["rows"]] == [1, 2] and saved["head_replaced"] and saved["zero_shot"] is None
    assert set(saved["rows"][0]["images"]) <= set(saved["rows"][1]["images"])
    assert all(0.0 <= r["miou"] <= 1.0 for r in saved["rows"]) and saved == json.loads(json.dumps(report))
    assert "| 2 |" in (out / "finetune.md").read_text()
    run = load_checkpoint(out / "k1" / "last.pt")
    assert run["num_classes"] == 3 and run["config"]["method"] == "fewshot" and run["config"]["train"][0]["shots"] == 1
    mtimes = {k: (out / f"k{k}" / "last.pt").stat().st_mtime_ns for k in (1, 2)}
    again = run_finetune(tmp_path / "teacher.pt", target_data, **common)
    assert again["rows"] == report["rows"]
    assert all((out / f"k{k}" / "last.pt").stat().st_mtime_ns == t for k, t in mtimes.items())
    with pytest.raises(ConfigError, match="fewshot.json"):  # same folder, other settings: not silently mixed
        run_finetune(tmp_path / "teacher.pt", target_data, **{**common, "epochs": 2})


def test_same_classes_report_zero_shot_and_cli(tmp_path):
    data = write_tiny_dataset(tmp_path / "tgt", n=2, seed=2)
    _checkpoint(tmp_path / "m.pt", num_classes=3)
    app = typer.Typer(cls=ErrorHandlingGroup)
    app.command("finetune")(finetune_command)
    app.command("noop")(lambda: None)  # two commands, so `finetune` is a subcommand as under csst-edge
    out = tmp_path / "cli"
    args = [
        "finetune",
        str(tmp_path / "m.pt"),
        "--data",
        str(data),
        "--shots",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--crop",
        "32x32",
        "--out",
        str(out),
        "--device",
        "cpu",
        "-q",
        "workers=0",
        "augment.blur=0",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "finetune.json").read_text())
    assert not saved["head_replaced"] and saved["zero_shot"] is not None and "zero-shot" in result.output
    assert "0 (zero-shot)" in (out / "finetune.md").read_text()
    bad = CliRunner().invoke(app, args[:2] + ["--data", str(data), "--shots", "9", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "shots=9" in bad.output
