"""`pseudo-label`: hard labels = the teacher's argmax, threshold and top-k outputs, resume, corrupt inputs, sharding
over two gloo ranks; and the paper's ablation methods training on the result."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import run_torchrun, write_tiny_dataset

from csst_edge.data.imageio import read_image, read_label
from csst_edge.data.transforms import normalize
from csst_edge.fileio import file_sha256, read_jsonl
from csst_edge.pseudo import PseudoLabelSettings, generate_pseudo_labels
from csst_edge.pseudo.generate import read_soft_label
from csst_edge.train.checkpoint import model_from_checkpoint, normalization, save_checkpoint

H, W = 32, 48
CLASSES = ["c0", "c1", "c2"]


def make_teacher(path: Path, seed: int = 0) -> Path:
    from csst_edge.models import create_model

    torch.manual_seed(seed)
    model = create_model("fastscnn", num_classes=len(CLASSES)).eval()
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "arch": "fastscnn",
            "num_classes": len(CLASSES),
            "class_names": CLASSES,
            "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]],
            "mean": (0.5, 0.5, 0.5),
            "std": (0.25, 0.25, 0.25),
            "epoch": 1,
        },
    )
    return path


def write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        image[: H // 2] //= 3  # some structure, so the teacher's classes differ across the image
        paths.append(folder / f"im{i:02d}.png")
        cv2.imwrite(str(paths[-1]), image)
    return paths


def teacher_probs(ckpt: Path, image_path: Path) -> np.ndarray:
    model, state = model_from_checkpoint(ckpt)
    mean, std = normalization(state)
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(normalize(read_image(image_path), mean, std))[None])
    return torch.softmax(logits, 1)[0].numpy()


def settings(**kw) -> PseudoLabelSettings:
    return PseudoLabelSettings(workers=0, device="cpu", **kw)


@pytest.fixture
def teacher(tmp_path) -> Path:
    return make_teacher(tmp_path / "teacher.pt")


def manifest(out: Path) -> list[dict]:
    return [r for f in sorted(out.glob("manifest*.jsonl")) for r in read_jsonl(f)]


def test_hard_labels_are_the_teachers_argmax_and_the_manifest_describes_them(tmp_path, teacher):
    images = write_images(tmp_path / "unlabelled", 3)
    out = tmp_path / "pseudo"
    summary = generate_pseudo_labels(teacher, [str(tmp_path / "unlabelled")], out, settings(), progress=False)
    assert (summary.total, summary.labelled, summary.failed) == (3, 3, 0)
    records = {Path(r["image"]).name: r for r in manifest(out)}
    for path in images:
        probs = teacher_probs(teacher, path)
        record = records[path.name]
        label = read_label(out / record["label"])
        assert label.shape == (H, W) and label.dtype == np.uint8
        assert np.array_equal(label, probs.argmax(0))
        assert record["class_histogram"] == np.bincount(probs.argmax(0).ravel(), minlength=3).tolist()
        assert record["mean_confidence"] == pytest.approx(probs.max(0).mean(), abs=1e-4)
        assert record["teacher_hash"] == file_sha256(teacher) and record["status"] == "ok"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["class_names"] == CLASSES and meta["ignore_index"] == 255


def test_threshold_and_topk_outputs_decode_back(tmp_path, teacher):
    (path,) = write_images(tmp_path / "unlabelled", 1)
    probs = teacher_probs(teacher, path)
    threshold = float(np.median(probs.max(0)))  # about half the pixels fall below
    out = tmp_path / "pseudo"
    generate_pseudo_labels(teacher, [str(path)], out, settings(threshold=threshold, topk=2), progress=False)
    (record,) = manifest(out)
    label = read_label(out / record["label"])
    low = probs.max(0) < threshold
    assert 0 < low.sum() < low.size
    assert (label[low] == 255).all() and np.array_equal(label[~low], probs.argmax(0)[~low])
    assert record["ignored_share"] == pytest.approx(low.mean(), abs=1e-4)
    ids, soft = read_soft_label(out / record["soft"])
    assert ids.shape == soft.shape == (2, H, W)
    order = np.argsort(-probs, axis=0)[:2]
    assert np.array_equal(ids, order)
    assert np.abs(soft - np.take_along_axis(probs, order, axis=0)).max() <= 0.5 / 255 + 1e-6
    with pytest.raises(Exception, match="threshold"):
        generate_pseudo_labels(teacher, [str(path)], tmp_path / "bad", settings(threshold=1.5), progress=False)


def test_rerun_after_a_kill_redoes_nothing_finished(tmp_path, teacher):
    write_images(tmp_path / "unlabelled", 4)
    out = tmp_path / "pseudo"
    generate_pseudo_labels(teacher, [str(tmp_path / "unlabelled")], out, settings(), progress=False)
    lines = (out / "manifest.jsonl").read_text().splitlines()
    # a run killed before its last image finished: that image has no manifest line (its PNG may or may not exist,
    # written atomically either way)
    killed = json.loads(lines[-1])
    (out / "manifest.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    (out / killed["label"]).unlink()
    finished = {json.loads(line)["label"]: (out / json.loads(line)["label"]).stat().st_mtime_ns for line in lines[:-1]}

    summary = generate_pseudo_labels(teacher, [str(tmp_path / "unlabelled")], out, settings(), progress=False)
    assert (summary.done_before, summary.labelled) == (3, 1)
    assert {rel: (out / rel).stat().st_mtime_ns for rel in finished} == finished
    names = [r["name"] for r in manifest(out)]
    assert sorted(names) == sorted(set(names)) and len(names) == 4 and (out / killed["label"]).is_file()
    assert not list(out.rglob("*.tmp*"))


def test_corrupt_image_is_reported_and_skipped(tmp_path, teacher):
    write_images(tmp_path / "unlabelled", 2)
    (tmp_path / "unlabelled" / "broken.png").write_bytes(b"this is not a PNG")
    out = tmp_path / "pseudo"
    summary = generate_pseudo_labels(teacher, [str(tmp_path / "unlabelled")], out, settings(), progress=False)
    assert (summary.labelled, summary.failed) == (2, 1)
    errors = [r for r in manifest(out) if r["status"] == "error"]
    assert len(errors) == 1 and errors[0]["image"].endswith("broken.png") and "broken.png" in errors[0]["error"]
    assert len(list((out / "labels").rglob("*.png"))) == 2


def test_two_gloo_ranks_split_the_images_without_overlap(tmp_path, teacher):
    images = write_images(tmp_path / "unlabelled", 5)
    out = tmp_path / "pseudo"
    done = run_torchrun(
        "pseudo-label", str(teacher), str(tmp_path / "unlabelled"), "-o", str(out), "--workers", "0", "--quiet"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    per_rank = [{Path(r["image"]).name for r in read_jsonl(out / f"manifest-{rank}.jsonl")} for rank in (0, 1)]
    assert not per_rank[0] & per_rank[1]
    assert per_rank[0] | per_rank[1] == {p.name for p in images}
    assert sorted(len(names) for names in per_rank) == [2, 3]


@pytest.mark.parametrize("method", ["student", "finetune", "consistency", "soft", "mr"])
def test_each_ablation_method_trains_a_few_steps(tmp_path, method):
    from csst_edge.train.config import load_train_config
    from csst_edge.train.trainer import train

    data = write_tiny_dataset(tmp_path / "tiny", splits=("train", "val"), n=4, size=(32, 48))
    teacher = make_teacher(tmp_path / "teacher.pt", seed=123)  # the students' own init uses seed 0
    pseudo = tmp_path / "pseudo"
    generate_pseudo_labels(
        teacher, [str(tmp_path / "tiny" / "images" / "val")], pseudo, settings(topk=2), progress=False
    )
    out = tmp_path / method
    extra = [f"pretrained={teacher}"] if method in ("finetune", "consistency") else []
    result = train(
        load_train_config(
            None,
            [
                f"train=[{{data: '{data}', split: train}}, {{pseudo: '{pseudo}'}}]",
                "real_fraction=0.5",
                "model=fastscnn",
                "epochs=2",
                "batch_size=2",
                "samples_per_epoch=4",
                "crop=[32,32]",
                "workers=0",
                # LR 0: the steps run (losses, gradients, optimizer) but leave the convolutions where they started, so
                # the test can check exactly where each method starts, with no numerical tolerance to drift
                "log_every=1",
                "optim.lr=0",
                f"method={method}",
                f"out={out}",
                *extra,
            ],
        ),
        progress=False,
    )
    steps = [r for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "step"]
    assert len(steps) == 4 and all(np.isfinite(s["loss"]) for s in steps)
    assert result.epochs_run == 2 and (out / "last.pt").is_file()
    if method == "mr":
        assert all(s["mr"] >= 0 for s in steps)
    # finetune / consistency start from the teacher's weights exactly; the others from their own random init
    trained, _ = model_from_checkpoint(out / "last.pt")
    start, _ = model_from_checkpoint(teacher)
    teacher_convs = {k: v for k, v in start.state_dict().items() if v.ndim == 4}
    trained_convs = {k: v for k, v in trained.state_dict().items() if v.ndim == 4}
    assert teacher_convs.keys() == trained_convs.keys()
    same = [torch.equal(trained_convs[k], teacher_convs[k]) for k in teacher_convs]
    if method in ("finetune", "consistency"):
        assert all(same)
    else:
        assert not any(same)


def _pseudo_label_val(tmp_path):
    """Pseudo labels for the tiny dataset's val images from a random teacher, in tmp_path/pseudo."""
    pseudo = tmp_path / "pseudo"
    generate_pseudo_labels(
        make_teacher(tmp_path / "teacher.pt"),
        [str(tmp_path / "tiny" / "images" / "val")],
        pseudo,
        settings(),
        progress=False,
    )
    return pseudo


def test_student_with_real_only_tail_trains_from_pseudo_folder(tmp_path):
    """Centroid sampling over real + pseudo in proportion, then a real-only last epoch: the real group gets its
    own centroid index beside the joint one, and the log marks the tail epoch."""
    from csst_edge.train.config import load_train_config
    from csst_edge.train.trainer import train

    data = write_tiny_dataset(tmp_path / "tiny", splits=("train", "val"), n=4, size=(32, 48))
    pseudo = _pseudo_label_val(tmp_path)
    out = tmp_path / "student"
    overrides = [
        f"train=[{{data: '{data}', split: train}}, {{pseudo: '{pseudo}'}}]",
        "sampling=centroid",
        "min_area=1",
        "real_only_tail=0.34",
        "epochs=3",
        "batch_size=2",
        "samples_per_epoch=4",
        "crop=[32,32]",
        "workers=0",
        "val=null",
        f"out={out}",
    ]
    train(load_train_config(None, overrides), progress=False)
    epochs = [r for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "epoch"]
    assert [bool(r.get("real_only")) for r in epochs] == [False, False, True]
    assert (out / "centroids_all.npz").is_file() and (out / "centroids_real.npz").is_file()


def test_soft_method_needs_topk_pseudo_labels(tmp_path):
    from csst_edge.errors import ConfigError
    from csst_edge.train.config import load_train_config
    from csst_edge.train.trainer import train

    data = write_tiny_dataset(tmp_path / "tiny", splits=("train", "val"), n=2, size=(32, 48))
    pseudo = _pseudo_label_val(tmp_path)
    with pytest.raises(ConfigError, match="--topk"):
        train(
            load_train_config(
                None,
                [
                    f"train=[{{data: '{data}', split: train}}, {{pseudo: '{pseudo}'}}]",
                    "model=fastscnn",
                    "epochs=1",
                    "crop=[32,32]",
                    "workers=0",
                    "method=soft",
                    f"out={tmp_path / 'soft'}",
                ],
            ),
            progress=False,
        )
