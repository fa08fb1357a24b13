"""Synthetic street scenes: determinism, class statistics, domain gap, dataset writing, dashcam video."""

from __future__ import annotations

import cc3d
import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from csst_edge.data.cityscapes_classes import (
    BUILDING,
    CAR,
    CLASS_NAMES,
    MOTORCYCLE,
    NUM_CLASSES,
    PALETTE,
    RIDER,
    ROAD,
    SKY,
    TRAIN,
    VEGETATION,
)
from csst_edge.data.dataset import list_samples, load_dataset_config, validate_split
from csst_edge.data.synth import render_scene, write_dataset, write_video

H, W = 64, 128
N_PER_CITY = 50


@pytest.fixture(scope="module")
def scenes():
    """A small sample of both cities, shared by the statistics tests (~3 s)."""
    return {city: [render_scene(seed, city, H, W) for seed in range(N_PER_CITY)] for city in "AB"}


def test_classes_and_palette():
    assert len(CLASS_NAMES) == len(PALETTE) == NUM_CLASSES == 19
    assert CLASS_NAMES[ROAD] == "road" and CLASS_NAMES[SKY] == "sky" and CLASS_NAMES[-1] == "bicycle"


def test_deterministic_per_seed():
    a_img, a_lab = render_scene(7, "A", H, W)
    b_img, b_lab = render_scene(np.random.default_rng(7), "A", H, W)
    assert a_img.dtype == np.uint8 and a_img.shape == (H, W, 3) and a_lab.shape == (H, W)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    c_img, c_lab = render_scene(8, "A", H, W)
    assert not np.array_equal(a_img, c_img) and not np.array_equal(a_lab, c_lab)


def test_labels_in_range(scenes):
    for frames in scenes.values():
        for _, label in frames:
            assert label.dtype == np.uint8 and int(label.max()) < NUM_CLASSES


def test_long_tailed_classes(scenes):
    counts = np.zeros(NUM_CLASSES)
    present = np.zeros(NUM_CLASSES)
    for frames in scenes.values():
        for _, label in frames:
            c = np.bincount(label.ravel(), minlength=NUM_CLASSES)
            counts += c
            present += c > 0
    share = counts / counts.sum()
    top = set(np.argsort(share)[::-1][:3].tolist())
    assert {ROAD, SKY} <= top, {CLASS_NAMES[i]: round(float(share[i]), 3) for i in np.argsort(share)[::-1][:5]}
    for rare in (TRAIN, MOTORCYCLE, RIDER):
        assert 0 < share[rare] < 0.01, (CLASS_NAMES[rare], share[rare])
        assert present[rare] >= 1
        assert present[rare] < present[ROAD] / 3  # rare also in how many frames show it
    assert present.min() >= 1, [CLASS_NAMES[i] for i in np.nonzero(present == 0)[0]]  # every class appears


def test_objects_are_separate_components(scenes):
    most = 0
    for frames in scenes.values():
        for _, label in frames:
            cars = cc3d.connected_components((label == CAR).astype(np.uint8), connectivity=8)
            most = max(most, int(cars.max()))
    assert most >= 2


def test_cities_differ_in_colour_and_layout(scenes):
    def mean_colour(city, cls):
        px = np.concatenate([img[lab == cls] for img, lab in scenes[city]])
        return px.astype(float).mean(0)

    for cls in (BUILDING, SKY, VEGETATION):
        assert np.abs(mean_colour("A", cls) - mean_colour("B", cls)).sum() > 30, CLASS_NAMES[cls]

    def share(city, cls):
        return np.mean([np.mean(lab == cls) for _, lab in scenes[city]])

    assert share("B", VEGETATION) > 1.5 * share("A", VEGETATION)  # B is greener


def test_colour_alone_does_not_give_the_class(scenes):
    frames = scenes["A"] + scenes["B"]
    fit, held = frames[::2], frames[1::2]
    pixels = np.concatenate([img.reshape(-1, 3) for img, _ in fit]).astype(np.float32)
    labels = np.concatenate([lab.ravel() for _, lab in fit])
    present = np.unique(labels)
    means = np.stack([pixels[labels == c].mean(0) for c in present])
    test_px = np.concatenate([img.reshape(-1, 3) for img, _ in held]).astype(np.float32)
    test_lab = np.concatenate([lab.ravel() for _, lab in held])
    dist = ((test_px[:, None, :] - means[None]) ** 2).sum(-1)
    accuracy = float(np.mean(present[dist.argmin(1)] == test_lab))
    assert accuracy < 0.6, accuracy

    # the best any colour-only rule can do: the majority class of each colour bin, fitted on the same frames
    def bins(img):
        q = img.reshape(-1, 3).astype(np.int64) // 16
        return q[:, 0] * 256 + q[:, 1] * 16 + q[:, 2]

    table = np.zeros((4096, NUM_CLASSES))
    np.add.at(table, (np.concatenate([bins(img) for img, _ in fit]), labels), 1)
    accuracy = float(np.mean(table.argmax(1)[np.concatenate([bins(img) for img, _ in held])] == test_lab))
    assert accuracy < 0.75, accuracy


def test_write_dataset_loads_validates_and_reruns(tmp_path):
    out = tmp_path / "synth"
    rendered = []
    yamls = write_dataset(
        out,
        cities=("A",),
        train=3,
        val=2,
        height=32,
        width=64,
        seed=3,
        progress=False,
        on_frame=lambda name, done: rendered.append(done),
    )
    assert sum(rendered) == 5 and yamls["A"] == out / "cityA.yaml"
    cfg = load_dataset_config(yamls["A"])
    assert cfg.root == (out / "cityA").resolve() and cfg.num_classes == 19 and cfg.ignore_index == 255
    assert cfg.class_names == list(CLASS_NAMES) and cfg.palette == list(PALETTE)
    assert validate_split(cfg, "train") == 3 and validate_split(cfg, "val") == 2
    assert [s.name for s in list_samples(cfg, "val")] == ["cityA_val_00000", "cityA_val_00001"]

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix in (".jpg", ".png")}
    rendered.clear()
    write_dataset(
        out,
        cities=("A",),
        train=3,
        val=2,
        height=32,
        width=64,
        seed=3,
        progress=False,
        on_frame=lambda name, done: rendered.append(done),
    )
    assert rendered == [False] * 5
    assert before == {p: p.stat().st_mtime_ns for p in before}

    parallel = tmp_path / "parallel"
    write_dataset(parallel, cities=("A",), train=3, val=2, height=32, width=64, seed=3, workers=2, progress=False)
    for p in before:
        assert (parallel / p.relative_to(out)).read_bytes() == p.read_bytes(), p

    with pytest.raises(Exception, match="made with"):  # another size into the same folder is refused
        write_dataset(out, cities=("A",), train=3, val=2, height=48, width=64, seed=3, progress=False)


def test_builtin_synth_yamls_resolve_env_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CSST_SYNTH_ROOT", str(tmp_path))
    for city in "AB":
        cfg = load_dataset_config(f"synth_city{city}")
        assert cfg.root == tmp_path / f"city{city}" and cfg.num_classes == 19


def test_video_is_temporally_coherent(tmp_path):
    frames = 12
    path = write_video(
        tmp_path / "drive.mp4",
        city="B",
        frames=frames,
        height=H,
        width=W,
        fps=15,
        seed=1,
        labels_dir=tmp_path / "labels",
    )
    cap = cv2.VideoCapture(str(path))
    video = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        video.append(frame[..., ::-1].astype(np.float32))
    cap.release()
    assert len(video) == frames and video[0].shape == (H, W, 3)
    labels = sorted((tmp_path / "labels").glob("frame_*.png"))
    assert len(labels) == frames
    consecutive = np.mean([np.abs(a - b).mean() for a, b in zip(video, video[1:], strict=False)])
    others = [render_scene(100 + i, "B", H, W)[0].astype(np.float32) for i in range(4)]
    unrelated = np.mean([np.abs(v - o).mean() for v, o in zip(video[::3], others, strict=False)])
    assert consecutive < 0.5 * unrelated, (consecutive, unrelated)
    l0, l1 = (cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in labels[:2])
    assert np.mean(l0 == l1) > 0.8  # the world persists: labels move a little, they are not re-drawn


def test_cli_synth_command(tmp_path):
    from csst_edge.cli.data_synth import synth_command

    app = typer.Typer()
    app.command()(synth_command)
    app.command("noop")(lambda: None)  # two commands: keep `synth` as a named subcommand
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app,
        [
            "synth-command",
            "--out",
            str(out),
            "--train",
            "2",
            "--val",
            "1",
            "--height",
            "32",
            "--width",
            "64",
            "--video-frames",
            "3",
            "--workers",
            "1",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "cityA.yaml").is_file() and (out / "cityB.yaml").is_file()
    assert (out / "cityB_drive.mp4").is_file() and len(list((out / "cityB_drive_labels").glob("*.png"))) == 3
    assert "class pixel share" in result.output and "road" in result.output
