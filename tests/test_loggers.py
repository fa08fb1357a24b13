"""Training loggers: metrics.jsonl, TensorBoard and MLflow get every scalar the trainer logs, read back for real."""

import json
import sys

import pytest
from typer.testing import CliRunner

from csst_edge.cli.main import app
from csst_edge.errors import ConfigError
from csst_edge.train.config import load_train_config
from csst_edge.train.loggers import redact_uri, scalars


def _train(tiny_dataset, out, *extra):
    """A short `csst-edge train`: 2 epochs of 2 steps, a step line every step, val every epoch."""
    args = [
        "train",
        f"train=[{{data: '{tiny_dataset}', split: train}}]",
        f"val={{data: '{tiny_dataset}', split: val}}",
        "model=fastscnn",
        "epochs=2",
        "batch_size=2",
        "crop=[32,32]",
        "workers=0",
        "log_every=1",
        "augment.blur=0",
        f"out={out}",
        *extra,
        "-q",
    ]
    return CliRunner().invoke(app, args)


def _jsonl(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_logger_key_takes_a_list_or_commas_and_names_what_is_wrong():
    assert load_train_config(None, ["logger=tensorboard"]).logger == ["tensorboard"]
    assert load_train_config(None, ["logger=tensorboard,mlflow"]).logger == ["tensorboard", "mlflow"]
    assert load_train_config(None, ["logger=[mlflow, tensorboard]"]).logger == ["mlflow", "tensorboard"]
    assert load_train_config(None, []).logger == [] and load_train_config(None, ["logger=none"]).logger == []
    with pytest.raises(ConfigError, match="config key 'logger' names 'wandb'; choose from tensorboard, mlflow"):
        load_train_config(None, ["logger=wandb"])
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_PASSWORD") as e:
        load_train_config(None, ["mlflow_tracking_uri=https://me:s3cret@mlflow.example.com"])
    assert "s3cret" not in str(e.value)
    assert redact_uri("https://me:s3cret@host:5000/x?token=abc") == "https://me:***@host:5000/x?***"
    assert redact_uri("sqlite:///mlruns/mlflow.db") == "sqlite:///mlruns/mlflow.db"


def test_scalars_are_every_number_of_a_record():
    record = {"type": "epoch", "epoch": 1, "iteration": 4, "crop": [32, 64], "loss": 0.5, "lr": None, "ok": True}
    assert scalars(record) == {
        "epoch/epoch": 1.0,
        "epoch/crop_h": 32.0,
        "epoch/crop_w": 64.0,
        "epoch/loss": 0.5,
        "epoch/ok": 1.0,
    }


@pytest.mark.parametrize("name", ["tensorboard", "mlflow"])
def test_missing_package_is_one_line_naming_the_extra(tiny_dataset, tmp_path, monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it raises ImportError
    result = _train(tiny_dataset, tmp_path / "run", f"logger={name}")
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f'pip install "csst-edge[{name}]"' in lines[0], result.output
    assert not (tmp_path / "run" / "last.pt").exists()  # refused before training


def test_tensorboard_event_file_holds_every_scalar_the_trainer_logs(tiny_dataset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    result = _train(tiny_dataset, run, "logger=tensorboard")
    assert result.exit_code == 0, result.output
    assert list(run.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run))
    events.Reload()
    lines = _jsonl(run)
    steps = [line for line in lines if line["type"] == "step"]
    epochs = [line for line in lines if line["type"] == "epoch"]
    tags = set(events.Tags()["scalars"])
    for line in steps + epochs:  # every number of every metrics.jsonl line is a scalar at its iteration
        for tag, value in scalars(line).items():
            assert tag in tags, tag
            logged = {s.step: s.value for s in events.Scalars(tag)}
            assert logged[line["iteration"]] == pytest.approx(value, rel=1e-6), tag
    assert [s.step for s in events.Scalars("step/loss")] == [1, 2, 3, 4]
    assert {"epoch/val_miou", "epoch/crop_h", "step/lr", "step/main"} <= tags
    assert {"val_iou/c0", "val_iou/c1", "val_iou/c2"} & tags
    texts = events.Tags()["tensors"]
    table = events.Tensors("val/per_class_iou/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "| class | IoU (%) |" in table and "| c0 |" in table
    config = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "config/text_summary" in texts and "model: fastscnn" in config and "logger:" in config


def test_mlflow_run_holds_scalars_iou_table_and_config_and_resume_continues_it(tiny_dataset, tmp_path, monkeypatch):
    """A local store in a folder (SQLite: MLflow 3 refuses its old file store), read back with MlflowClient."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store, run = tmp_path / "mlruns", tmp_path / "run"
    result = _train(tiny_dataset, run, "logger=mlflow", f"mlflow_tracking_uri={store}", "mlflow_experiment=tiny")
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
    assert json.loads((run / "mlflow_run.json").read_text())["run_id"] == found.info.run_id
    lines = _jsonl(run)
    steps = [line for line in lines if line["type"] == "step"]
    history = {m.step: m.value for m in client.get_metric_history(found.info.run_id, "step/loss")}
    assert history == {s["iteration"]: pytest.approx(s["loss"]) for s in steps}
    for line in lines:
        for key in scalars(line):
            assert key in found.data.metrics, key
    assert {"val_iou/c0", "epoch/val_miou", "epoch/crop_w"} <= set(found.data.metrics)
    params = found.data.params
    assert params["model"] == "fastscnn" and params["optim.lr"] == "0.01" and params["logger"] == "['mlflow']"
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"config.yaml", "eval.json"} <= artifacts
    table = json.loads(open(client.download_artifacts(found.info.run_id, "eval.json", str(tmp_path))).read())
    assert table == json.loads((run / "eval.json").read_text())  # the best epoch's per-class IoU table

    # one more epoch: the same MLflow run goes on (no second run), its config artifact is the new one
    resumed = CliRunner().invoke(app, ["train", str(run / "config.yaml"), "epochs=3", "-q"])
    assert resumed.exit_code == 0, resumed.output
    (again,) = client.search_runs([experiment.experiment_id])
    assert again.info.run_id == found.info.run_id and again.info.status == "FINISHED"
    val = client.get_metric_history(found.info.run_id, "epoch/val_miou")
    assert sorted(m.step for m in val) == [2, 4, 6]
    config = open(
        client.download_artifacts(found.info.run_id, "config.yaml", str((tmp_path / "dl").mkdir() or tmp_path / "dl"))
    ).read()
    assert "epochs: 3" in config
