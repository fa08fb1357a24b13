from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import add_stray_id, set_id_remap, write_tiny_dataset
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from csst_edge.data.selection import SourceConfig
from csst_edge.evaluate import ConfusionMatrix, evaluate, predict_logits
from csst_edge.evaluate.dataset import collate_eval, eval_dataset
from csst_edge.evaluate.report import metrics_table, write_eval_json

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


# ------------------------------------------------------------------------------------------------ metrics
def hand_case():
    # gt:   0 0 0 1 1 2 2 | 255 (ignored) | 7 (outside [0, C): ignored)
    # pred: 0 0 1 1 2 2 0 |  1            |  2
    target = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 255, 7]])
    pred = torch.tensor([[0, 0, 1, 1, 2, 2, 0, 1, 2]])
    return pred, target


def test_confusion_matrix_matches_hand_arithmetic():
    pred, target = hand_case()
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    m = cm.compute()
    # rows = gt: gt0 → pred (0,0,1); gt1 → (1,2); gt2 → (2,0)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [1, 0, 1]]
    # IoU_c = tp / (gt_c + pred_c - tp):  c0: 2/(3+3-2) = 1/2,  c1: 1/(2+2-1) = 1/3,  c2: 1/(2+2-1) = 1/3
    assert m["per_class_iou"] == pytest.approx([1 / 2, 1 / 3, 1 / 3])
    assert m["miou"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 3) / 3)  # 7/18
    assert m["pixel_accuracy"] == pytest.approx(4 / 7)  # 4 correct of 7 counted pixels
    assert m["mean_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)  # 5/9


def test_ignored_pixels_do_not_count_whatever_is_predicted():
    pred, target = hand_case()
    other = pred.clone()
    other[0, 7:] = 0  # change the predictions at the ignore / out-of-range pixels only
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    a.update(pred, target)
    b.update(other, target)
    assert a.compute()["confusion"] == b.compute()["confusion"]
    assert sum(map(sum, a.compute()["confusion"])) == 7


def test_absent_class_is_nan_and_excluded_but_predicted_only_class_scores_zero():
    pred, target = hand_case()
    cm = ConfusionMatrix(4)  # class 3 appears nowhere
    cm.update(pred, target)
    m = cm.compute()
    assert math.isnan(m["per_class_iou"][3])
    assert m["miou"] == pytest.approx(7 / 18)
    # a class that is predicted but never in the target: every pixel a false positive → IoU 0, counted
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([0, 3]), torch.tensor([0, 0]))
    m = cm.compute()
    assert m["per_class_iou"][3] == 0.0 and m["miou"] == pytest.approx((1 / 2 + 0) / 2)


def test_updates_accumulate_and_bad_predictions_raise():
    pred, target = hand_case()
    cm = ConfusionMatrix(3)
    cm.update(pred[:, :4], target[:, :4])
    cm.update(pred[:, 4:], target[:, 4:])
    assert cm.compute()["confusion"] == [[2, 1, 0], [0, 1, 1], [1, 0, 1]]
    with pytest.raises(ValueError, match="lie in"):
        cm.update(torch.tensor([3]), torch.tensor([0]))
    cm.reduce_from_all_processes()  # no process group: a no-op
    empty = ConfusionMatrix(2).compute()
    assert math.isnan(empty["miou"]) and empty["confusion"] == [[0, 0], [0, 0]]


# ---------------------------------------------------------------------------------------------- inference
def conv_model(kernel: int = 1, classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv2d(3, classes, kernel, padding=kernel // 2).eval()


def test_multiscale_with_one_scale_equals_single():
    model = nn.Sequential(conv_model(3), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)).eval()
    x = torch.randn(2, 3, 20, 28)
    single = predict_logits(model, x)
    assert single.shape == (2, 4, 20, 28)
    assert torch.equal(predict_logits(model, x, mode="multiscale", scales=(1.0,)), single)
    probs = predict_logits(model, x, mode="multiscale", scales=(1.0,), output="probs")
    assert torch.allclose(probs, single.softmax(1))


def test_flip_with_flip_equivariant_model_equals_single():
    model = conv_model(1)  # a 1x1 conv commutes with a horizontal flip
    x = torch.randn(1, 3, 16, 24)
    single = predict_logits(model, x)
    flipped = predict_logits(model, x, flip=True, output="probs")
    assert torch.allclose(flipped, single.softmax(1), atol=1e-6)
    # two views: "logits" is the log of the averaged probabilities
    assert torch.allclose(predict_logits(model, x, flip=True), single.log_softmax(1), atol=1e-5)


def test_multiscale_averages_probabilities_of_each_view():
    model = conv_model(1)
    x = torch.randn(1, 3, 16, 24)
    out = predict_logits(model, x, mode="multiscale", scales=(0.5, 1.0), output="probs")
    half = torch.nn.functional.interpolate(x, size=(8, 12), mode="bilinear", align_corners=False)
    up = torch.nn.functional.interpolate(model(half), size=(16, 24), mode="bilinear", align_corners=False)
    expected = (up.softmax(1) + model(x).softmax(1)) / 2
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(out.sum(1), torch.ones(1, 16, 24))


def test_slide_with_crop_larger_than_image_equals_single():
    # one 3x3 conv: zero-padding the image to the crop is the conv's own zero padding, so the result is exact
    model = conv_model(3)
    x = torch.randn(2, 3, 15, 21)
    single = predict_logits(model, x)
    slide = predict_logits(model, x, mode="slide", crop=(32, 40))
    assert slide.shape == single.shape
    assert torch.allclose(slide, single, atol=1e-6)


def test_slide_with_overlapping_windows_averages_to_single_for_pointwise_model():
    model = conv_model(1)
    x = torch.randn(1, 3, 30, 50)
    single = predict_logits(model, x)
    slide = predict_logits(model, x, mode="slide", crop=(16, 24), stride=(7, 11))
    assert torch.allclose(slide, single, atol=1e-6)
    combined = predict_logits(model, x, mode="slide", crop=16, scales=(1.0,), flip=True, output="probs")
    assert torch.allclose(combined, single.softmax(1), atol=1e-6)


def test_bad_inference_options_raise():
    model, x = conv_model(1), torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="mode"):
        predict_logits(model, x, mode="sliding")
    with pytest.raises(ValueError, match="crop"):
        predict_logits(model, x, mode="slide")
    with pytest.raises(ValueError, match="classes"):
        predict_logits(model, x, num_classes=5)


# ---------------------------------------------------------------------------------------------- evaluate
class ColourModel(nn.Module):
    """Classifies each pixel by its red value, nearest to write_tiny_dataset's class colours (40 + 80c, ± 20 noise).
    On that data it is a perfect segmenter."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.register_buffer("centres", torch.tensor([40.0 + 80 * c for c in range(num_classes)]).view(1, -1, 1, 1))
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        red = (x[:, :1] * STD[0] + MEAN[0]) * 255
        return -((red - self.centres) ** 2) / 100 + self.dummy


class ConstantModel(nn.Module):
    def __init__(self, num_classes: int = 3, cls: int = 0):
        super().__init__()
        self.num_classes, self.cls = num_classes, cls

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.num_classes, *x.shape[-2:])
        out[:, self.cls] = 1
        return out


def tiny_loader(tmp_path: Path, batch_size: int = 2):
    yaml_path = write_tiny_dataset(tmp_path / "tiny", splits=("val",), n=3, size=(24, 32))
    dataset, ds = eval_dataset(SourceConfig(data=str(yaml_path), split="val"), MEAN, STD)
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate_eval), ds


def test_evaluate_perfect_model_gives_miou_one_and_restores_train_mode(tmp_path):
    loader, ds = tiny_loader(tmp_path)
    model = ColourModel().train()
    m = evaluate(model, loader, 3, "cpu", progress=False)
    assert model.training  # flag restored
    assert m["miou"] == 1.0 and m["pixel_accuracy"] == 1.0 and m["per_class_iou"] == [1.0, 1.0, 1.0]
    assert m["num_images"] == 3 and m["seconds"] >= 0


def test_evaluate_constant_model_matches_label_counts(tmp_path):
    loader, ds = tiny_loader(tmp_path, batch_size=1)
    labels = np.stack(
        [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((tmp_path / "tiny" / "labels" / "val").glob("*.png"))]
    )
    share0 = (labels == 0).mean()
    m = evaluate(ConstantModel(cls=0), loader, 3, "cpu", progress=True)
    # everything predicted as 0: IoU0 = |gt0| / |all|, IoU1 = IoU2 = 0 (present, never predicted)
    assert m["per_class_iou"] == pytest.approx([share0, 0.0, 0.0])
    assert m["miou"] == pytest.approx(share0 / 3)
    assert m["pixel_accuracy"] == pytest.approx(share0)


def test_save_predictions_writes_palette_png(tmp_path):
    loader, ds = tiny_loader(tmp_path)
    palette = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    out = tmp_path / "preds"
    evaluate(ColourModel(), loader, 3, "cpu", progress=False, save_predictions=out, palette=palette)
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == ["img00.png", "img01.png", "img02.png"]
    label = cv2.imread(str(tmp_path / "tiny" / "labels" / "val" / "img01.png"), cv2.IMREAD_UNCHANGED)
    rgb = cv2.imread(str(out / "img01.png"))[..., ::-1]
    assert np.array_equal(rgb, np.asarray(palette, np.uint8)[label])
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files


def test_save_predictions_creates_parent_folders_for_nested_names(tmp_path):
    x = torch.zeros(1, 3, 4, 6)
    loader = [(x, torch.zeros(1, 4, 6, dtype=torch.long), ["city/a/frame1"])]
    evaluate(ConstantModel(cls=2), loader, 3, "cpu", progress=False, save_predictions=tmp_path / "p")
    ids = cv2.imread(str(tmp_path / "p" / "city" / "a" / "frame1.png"), cv2.IMREAD_UNCHANGED)
    assert ids.shape == (4, 6) and (ids == 2).all()  # no palette: the class-id map


def test_report_table_and_json(tmp_path):
    pred, target = hand_case()
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    m = {**cm.compute(), "num_images": 1, "seconds": 0.1}
    table = metrics_table(m, ["a", "b", "c", "d"], "t")
    assert table.row_count == 4 + 3
    rec = write_eval_json(tmp_path / "e" / "eval.json", m, ["a", "b", "c", "d"], {"split": "val"})
    on_disk = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert on_disk == rec and on_disk["per_class_iou"]["d"] is None and on_disk["split"] == "val"
    assert on_disk["per_class_iou"]["a"] == pytest.approx(0.5)


def _ddp_worker(rank: int, world: int, init_file: str, yaml_path: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.utils.data import DistributedSampler

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        dataset, _ = eval_dataset(SourceConfig(data=yaml_path, split="val"), MEAN, STD)
        loader = DataLoader(
            dataset, batch_size=1, collate_fn=collate_eval, sampler=DistributedSampler(dataset, shuffle=False)
        )
        m = evaluate(ConstantModel(cls=0), loader, 3, "cpu", progress=False)  # sharded: detected from the sampler
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(m))
    finally:
        dist.destroy_process_group()


def test_ddp_two_ranks_sum_their_confusion_matrices(tmp_path):
    import torch.multiprocessing as mp

    yaml_path = write_tiny_dataset(tmp_path / "tiny", splits=("val",), n=4, size=(24, 32))
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(yaml_path), str(tmp_path)), nprocs=2)
    dataset, _ = eval_dataset(SourceConfig(data=str(yaml_path), split="val"), MEAN, STD)
    whole = evaluate(ConstantModel(cls=0), DataLoader(dataset, collate_fn=collate_eval), 3, "cpu", progress=False)
    for rank in (0, 1):
        m = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert m["confusion"] == whole["confusion"] and m["num_images"] == 4


# -------------------------------------------------------------------------------------------------- CLI
def cli_app():
    import typer

    from csst_edge.cli.common import ErrorHandlingGroup
    from csst_edge.cli.eval import eval_command

    app = typer.Typer(cls=ErrorHandlingGroup)
    app.command("eval")(eval_command)

    @app.callback()
    def root() -> None:  # a callback keeps it a group, so ErrorHandlingGroup handles errors
        pass

    return app


def test_cli_missing_checkpoint_is_one_line_exit_1(tmp_path):
    missing = tmp_path / "nope.pt"
    result = CliRunner().invoke(cli_app(), ["eval", str(missing), "--data", "camvid"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "nope.pt" in lines[0] and "error" in lines[0]


def test_cli_bad_options_name_the_option(tmp_path):
    result = CliRunner().invoke(cli_app(), ["eval", str(tmp_path / "x.pt"), "--mode", "slide"])
    assert result.exit_code == 1 and "--crop" in result.output
    result = CliRunner().invoke(cli_app(), ["eval", str(tmp_path / "x.pt"), "--mode", "multiscale", "--scales", "1,a"])
    assert result.exit_code == 1 and "--scales" in result.output


def test_cli_evaluates_a_checkpoint(tmp_path):
    from csst_edge import models
    from csst_edge.train.checkpoint import save_checkpoint

    yaml_path = write_tiny_dataset(tmp_path / "tiny", splits=("val",), n=2, size=(32, 32))
    model = models.create_model("fastscnn", num_classes=3)
    ckpt = tmp_path / "run" / "best.pt"
    save_checkpoint(
        ckpt, {"model": model.state_dict(), "arch": "fastscnn", "num_classes": 3, "mean": list(MEAN), "std": list(STD)}
    )
    result = CliRunner().invoke(
        cli_app(),
        [
            "eval",
            str(ckpt),
            "--data",
            str(yaml_path),
            "--workers",
            "0",
            "-q",
            "--flip",
            "--save-predictions",
            str(tmp_path / "preds"),
        ],
    )
    assert result.exit_code == 0, result.output
    rec = json.loads((tmp_path / "run" / "eval_val.json").read_text())
    assert rec["num_images"] == 2 and set(rec["per_class_iou"]) == {"c0", "c1", "c2"}
    assert rec["settings"]["flip"] is True and 0.0 <= rec["pixel_accuracy"] <= 1.0
    assert sorted(p.name for p in (tmp_path / "preds").glob("*.png")) == ["img00.png", "img01.png"]


def test_cli_eval_stray_class_id_is_one_clear_error_until_remapped(tmp_path):
    from csst_edge import models
    from csst_edge.train.checkpoint import save_checkpoint

    yaml_path = write_tiny_dataset(tmp_path / "tiny", splits=("val",), n=2, size=(32, 32))
    bad = add_stray_id(yaml_path, "val", "img01", 200)
    ckpt = tmp_path / "run" / "best.pt"
    state = {"arch": "fastscnn", "num_classes": 3, "mean": list(MEAN), "std": list(STD)}
    save_checkpoint(ckpt, {"model": models.create_model("fastscnn", num_classes=3).state_dict(), **state})
    args = ["eval", str(ckpt), "--data", str(yaml_path), "-q"]
    result = CliRunner().invoke(cli_app(), [*args, "--workers", "1"])  # decoded in a DataLoader worker
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output and "DataLoader" not in result.output, result.output
    assert str(bad) in lines[0] and "class id(s) 200" in lines[0] and "3 classes" in lines[0]
    assert "id_remap: {200: 255}" in lines[0]
    set_id_remap(yaml_path, {200: 255})
    result = CliRunner().invoke(cli_app(), [*args, "--workers", "0"])
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------------------------------- library: run_eval
def test_run_eval_and_evaluate_checkpoint_go_through_one_chain(tmp_path):
    from csst_edge import models
    from csst_edge.evaluate.checkpoint_eval import EvalSettings, evaluate_checkpoint, run_eval
    from csst_edge.fileio import file_sha256
    from csst_edge.train.checkpoint import save_checkpoint

    yaml_path = write_tiny_dataset(tmp_path / "tiny", splits=("val",), n=2, size=(32, 32))
    ckpt = tmp_path / "run" / "best.pt"
    state = {"arch": "fastscnn", "num_classes": 3, "mean": list(MEAN), "std": list(STD)}
    save_checkpoint(ckpt, {"model": models.create_model("fastscnn", num_classes=3).state_dict(), **state})
    run = run_eval(ckpt, EvalSettings(data=str(yaml_path), workers=0, device="cpu", progress=False), tmp_path / "out")
    assert run is not None and run.json_path == tmp_path / "out" / "eval_val.json"
    recorded = json.loads(run.json_path.read_text())["settings"]
    assert recorded["data"] == str(yaml_path) and recorded["device"] == "cpu" and recorded["scales"] == [1.0]
    assert recorded["checkpoint_sha256"] == file_sha256(ckpt) and recorded["crop"] is None
    single, class_names = evaluate_checkpoint(ckpt, yaml_path, "val", device="cpu", workers=0)
    assert single["miou"] == pytest.approx(run.metrics["miou"]) and list(class_names) == run.class_names


def test_evaluate_checkpoint_names_a_class_count_mismatch(tmp_path):
    from csst_edge import models
    from csst_edge.errors import ConfigError
    from csst_edge.evaluate.checkpoint_eval import evaluate_checkpoint
    from csst_edge.train.checkpoint import save_checkpoint

    yaml_path = write_tiny_dataset(tmp_path / "tiny", splits=("val",), n=1, size=(32, 32))
    ckpt = tmp_path / "five.pt"
    state = {"arch": "fastscnn", "num_classes": 5, "mean": list(MEAN), "std": list(STD)}
    save_checkpoint(ckpt, {"model": models.create_model("fastscnn", num_classes=5).state_dict(), **state})
    with pytest.raises(ConfigError, match="model has 5 classes, dataset .* has 3"):
        evaluate_checkpoint(ckpt, yaml_path, "val", device="cpu", workers=0)


def _cli_eval_rank(rank: int, world: int, port: int, ckpt: str, yaml_path: str, out_dir: str) -> None:
    import os

    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    args = ["eval", ckpt, "--data", yaml_path, "--workers", "0", "--device", "cpu", "-q", "--out", out_dir]
    result = CliRunner().invoke(cli_app(), args)
    assert result.exit_code == 0, result.output
    Path(out_dir).parent.joinpath(f"rank{rank}.out").write_text(result.output)


def test_cli_eval_under_torchrun_shards_the_images_and_only_rank_0_writes(tmp_path):
    import socket

    import torch.multiprocessing as mp

    from csst_edge import models
    from csst_edge.train.checkpoint import save_checkpoint

    yaml_path = write_tiny_dataset(tmp_path / "tiny", splits=("val",), n=4, size=(32, 32))
    ckpt = tmp_path / "best.pt"
    state = {"arch": "fastscnn", "num_classes": 3, "mean": list(MEAN), "std": list(STD)}
    save_checkpoint(ckpt, {"model": models.create_model("fastscnn", num_classes=3).state_dict(), **state})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sharded, whole = tmp_path / "sharded", tmp_path / "whole"
    mp.spawn(_cli_eval_rank, args=(2, port, str(ckpt), str(yaml_path), str(sharded)), nprocs=2)
    args = ["eval", str(ckpt), "--data", str(yaml_path), "--workers", "0", "--device", "cpu", "-q", "--out", str(whole)]
    assert CliRunner().invoke(cli_app(), args).exit_code == 0
    two, one = (json.loads((d / "eval_val.json").read_text()) for d in (sharded, whole))
    assert two["num_images"] == one["num_images"] == 4 and two["confusion"] == one["confusion"]
    assert "done" in (tmp_path / "rank0.out").read_text() and (tmp_path / "rank1.out").read_text() == ""
