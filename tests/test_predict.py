"""`csst-edge predict`: a checkpoint and its ONNX export give the same label PNGs; videos give an overlay video with
every frame; images, folders and list files are named as pseudo-label names them; wrong option combinations are
one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from csst_edge.cli.main import app
from csst_edge.errors import ConfigError
from csst_edge.export.frames import synthetic_frames
from csst_edge.export.onnx_export import export_onnx
from csst_edge.export.predict import PredictSettings, predict
from csst_edge.train.checkpoint import save_checkpoint

H, W = 64, 96
MEAN, STD = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)
CLASSES = ["road", "car", "sky"]
PALETTE = [[128, 64, 128], [0, 0, 142], [70, 130, 180]]
VIDEO_FRAMES = 7


def make_checkpoint(path: Path, frames: list[np.ndarray]) -> Path:
    """A random fastscnn whose BatchNorm statistics come from `frames`: untrained, but its labels vary over the
    image (with the default statistics every pixel gets the same class, which would make the comparison empty)."""
    from csst_edge.data.transforms import normalize
    from csst_edge.models import create_model

    torch.manual_seed(0)
    model = create_model("fastscnn", num_classes=len(CLASSES))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: one pass sets the statistics of these frames
    model.train()
    with torch.no_grad():
        model(torch.stack([torch.from_numpy(normalize(f, MEAN, STD)) for f in frames]))
    model.eval()
    state = {"model": model.state_dict(), "arch": "fastscnn", "num_classes": len(CLASSES), "class_names": CLASSES}
    save_checkpoint(path, {**state, "palette": PALETTE, "mean": MEAN, "std": STD, "epoch": 1})
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("predict")
    images = synthetic_frames(4, H, W, seed=3)
    ckpt = make_checkpoint(root / "model.pt", images)
    onnx = root / "model.onnx"
    export_onnx(ckpt, onnx, H, W, output="logits", verify_count=1)
    folder = root / "images"
    (folder / "seq").mkdir(parents=True)
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / ("seq" if i == 3 else "") / f"im{i}.png"), image[..., ::-1])
    video = root / "drive.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    for frame in synthetic_frames(VIDEO_FRAMES, H, W, seed=4):
        writer.write(frame[..., ::-1])
    writer.release()
    return {"root": root, "ckpt": ckpt, "onnx": onnx, "images": folder, "video": video}


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(folder).as_posix(): cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in folder.rglob("*.png")}


def test_checkpoint_and_its_onnx_export_give_the_same_label_pngs(world, tmp_path):
    s = PredictSettings(save=("labels",), threads=1)
    pt = predict(world["ckpt"], world["images"], tmp_path / "pt", s)
    ox = predict(world["onnx"], world["images"], tmp_path / "onnx", s)
    a, b = _labels(tmp_path / "pt" / "labels"), _labels(tmp_path / "onnx" / "labels")
    assert sorted(a) == sorted(b) == ["im0.png", "im1.png", "im2.png", "seq/im3.png"]
    for name in a:
        assert a[name].shape == (H, W) and a[name].dtype == np.uint8
        assert np.array_equal(a[name], b[name]), name
    assert len(np.unique(np.concatenate([v.ravel() for v in a.values()]))) > 1  # not one class everywhere
    assert pt.frames == ox.frames == 4 and pt.backend.startswith("torch") and ox.backend == "ort-cpu"
    assert pt.class_shares == ox.class_shares and abs(sum(pt.class_shares.values()) - 1) < 1e-3
    summary = json.loads((tmp_path / "onnx" / "predict.json").read_text())
    assert summary["frames"] == 4 and summary["written"] == {"labels": 4}
    assert set(summary["class_shares"]) == set(CLASSES)


def test_frames_of_another_size_are_fitted_and_mapped_back(world, tmp_path):
    """A static 64x96 export on 50x120 images: labels come back at the image's size, for resize and letterbox."""
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), synthetic_frames(1, 50, 120, seed=9)[0])
    for fit in ("resize", "letterbox"):
        predict(world["onnx"], big, tmp_path / fit, PredictSettings(save=("labels", "color", "overlay"), fit=fit))
        assert cv2.imread(str(tmp_path / fit / "labels" / "big.png"), cv2.IMREAD_UNCHANGED).shape == (50, 120)
        assert cv2.imread(str(tmp_path / fit / "color" / "big.png")).shape == (50, 120, 3)
        assert cv2.imread(str(tmp_path / fit / "overlay" / "big.jpg")).shape == (50, 120, 3)


def test_video_gives_an_overlay_video_with_every_frame(world, tmp_path):
    summary = predict(world["onnx"], world["video"], tmp_path / "out", PredictSettings(threads=1))
    video = tmp_path / "out" / "overlay" / "drive.mp4"
    assert summary.frames == VIDEO_FRAMES and summary.overlay_video == str(video)
    cap = cv2.VideoCapture(str(video))
    count = 0
    while cap.read()[0]:
        count += 1
    size = (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
    cap.release()
    assert count == VIDEO_FRAMES and size == (H, W)
    assert not (tmp_path / "out" / "labels").exists()  # a stream writes the overlay video unless asked for more

    summary = predict(world["ckpt"], world["video"], tmp_path / "pt", PredictSettings(save=("labels",), max_frames=3))
    assert summary.frames == 3 and summary.stopped_by == "max-frames"
    assert sorted(_labels(tmp_path / "pt" / "labels")) == [f"drive/f{i:06d}.png" for i in range(3)]


def test_list_file_names_outputs_by_their_listed_paths(world, tmp_path):
    listing = world["images"] / "list.txt"
    listing.write_text("im1.png\n# a comment\nseq/im3.png\n")
    predict(world["onnx"], listing, tmp_path / "out", PredictSettings(save=("labels",)))
    assert sorted(_labels(tmp_path / "out" / "labels")) == ["im1.png", "seq/im3.png"]
    listing.unlink()


@pytest.mark.parametrize(
    "model, settings, message",
    [
        ("onnx", PredictSettings(scales=(0.5, 1.0)), "--scales / --flip"),
        ("onnx", PredictSettings(backend="torch"), "--backend torch"),
        ("onnx", PredictSettings(backend="trt"), "ort-trt"),
        ("onnx", PredictSettings(size=(32, 32)), "--size"),
        ("ckpt", PredictSettings(backend="ort-cpu"), "export onnx"),
        ("onnx", PredictSettings(save=("labels", "masks")), "--save"),
    ],
)
def test_options_that_do_not_fit_the_model_are_errors(world, tmp_path, model, settings, message):
    from csst_edge.errors import CsstError

    with pytest.raises(CsstError, match=message):
        predict(world[model], world["images"], tmp_path, settings)


def test_unknown_model_type_is_an_error(world, tmp_path):
    with pytest.raises(ConfigError, match="unknown model type"):
        predict(world["root"] / "model.h5", world["images"], tmp_path)


def test_cli_predict(world, tmp_path):
    out = tmp_path / "cli"
    args = ["predict", str(world["onnx"]), "-s", str(world["images"]), "-o", str(out), "--save", "labels,overlay"]
    result = CliRunner().invoke(app, [*args, "-q", "--backend", "ort-cpu", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "4 frames" in result.output and "FPS" in result.output and "class shares" in result.output
    assert len(list((out / "overlay").rglob("*.jpg"))) == 4 and len(list((out / "labels").rglob("*.png"))) == 4
    bad = CliRunner().invoke(app, ["predict", str(world["onnx"]), "-s", str(world["images"]), "--flip"])
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert bad.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error:") and "--flip" in lines[0]
    help_text = CliRunner().invoke(app, ["predict", "--help"]).output
    assert "Examples" in help_text and "--source" in help_text


def test_predict_with_an_exported_model_does_not_import_torch(world, tmp_path):
    """The vehicle's install has no torch: predict on an .onnx must not need it."""
    import subprocess
    import sys

    code = (
        "import sys; from csst_edge.export.predict import predict; "
        f"s = predict({str(world['onnx'])!r}, {str(world['video'])!r}, {str(tmp_path)!r}); "
        "sys.exit(0 if s.frames == 7 and 'torch' not in sys.modules else 1)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
