"""Models: registry, output contract, parameter counts, pretrained loading, exact pyramid pooling, ONNX export."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from csst_edge.errors import ConfigError
from csst_edge.models import create_model, list_models, model_kind
from csst_edge.models.backbones import ResNetBackbone, dilate_resnet
from csst_edge.models.layers import adaptive_avg_pool2d_exact

STUDENTS = ["bisenet_r18", "fastscnn", "icnet_r18", "icnet_r50", "lraspp_lite0"]
TEACHERS = [
    "deeplabv3plus_lite0",
    "deeplabv3plus_lite1",
    "deeplabv3plus_lite2",
    "deeplabv3plus_r101",
    "deeplabv3plus_r18",
    "deeplabv3plus_r50",
    "deeplabv3plus_x50",
]
BIG = {  # teachers over ~2 s each on CPU
    "deeplabv3plus_lite1",
    "deeplabv3plus_lite2",
    "deeplabv3plus_r101",
    "deeplabv3plus_r50",
    "deeplabv3plus_x50",
}
SIZE = (64, 128)  # divisible by 32, as every model needs

# Measured parameter counts (19 / 11 classes, default aux heads included; aux=False in brackets, 19 classes):
#   fastscnn            1,156,918 / 1,155,622   (1,137,795)
#   bisenet_r18        13,392,761 / 13,389,665  (13,242,579)
#   icnet_r18          11,814,617 / 11,810,497  (11,807,283)
#   icnet_r50          24,588,505 / 24,584,385  (24,581,171)
#   deeplabv3plus_r18  17,202,630 / 17,198,518  (16,607,411)
#   deeplabv3plus_r50  42,716,102 / 42,711,990  (40,351,411)
#   deeplabv3plus_x50  42,187,974 / 42,183,862  (39,823,283)
#   deeplabv3plus_r101 61,708,230 / 61,704,118  (59,343,539)


def _param(name, slow=BIG):
    return pytest.param(name, marks=pytest.mark.slow) if name in slow else name


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_every_model_by_kind():
    assert list_models("student") == STUDENTS
    assert list_models("teacher") == TEACHERS
    assert list_models() == sorted(STUDENTS + TEACHERS)
    assert model_kind("fastscnn") == "student" and model_kind("deeplabv3plus_r18") == "teacher"


def test_unknown_model_name_names_it_and_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="unknown model 'segformer'.*fastscnn"):
        create_model("segformer", num_classes=19)


def test_unknown_model_option_is_a_config_error():
    with pytest.raises(ConfigError, match="output_stride"):
        create_model("fastscnn", num_classes=19, output_stride=8)


# icnet_r50 runs the same code as icnet_r18 (only its backbone differs) and a backward pass through it is slow
@pytest.mark.parametrize("name", [_param(n, BIG | {"icnet_r50"}) for n in STUDENTS + TEACHERS])
def test_output_contract_train_and_eval(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5)
    x = torch.randn(2, 3, *SIZE)
    model.train()
    main, aux = model(x)
    assert main.shape == (2, 5, *SIZE)
    assert len(aux) == len(model.aux_weights)
    assert all(a.shape == (2, 5, *SIZE) for a in aux)
    (main.mean() + sum(a.mean() for a in aux)).backward()  # every output is differentiable
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 5, *SIZE)


@pytest.mark.parametrize("size", [(32, 32), (96, 160)])
def test_students_take_any_size_divisible_by_32(size):
    x = torch.randn(1, 3, *size)
    for name in ["fastscnn", "bisenet_r18", "icnet_r18"]:
        with torch.no_grad():
            assert create_model(name, num_classes=3).eval()(x).shape == (1, 3, *size)


@pytest.mark.parametrize("name", ["fastscnn", "bisenet_r18", "icnet_r18", "deeplabv3plus_r18"])
def test_aux_false_gives_no_aux_outputs(name):
    model = create_model(name, num_classes=3, aux=False).train()
    main, aux = model(torch.randn(2, 3, *SIZE))
    assert aux == [] and model.aux_weights == [] and main.shape == (2, 3, *SIZE)


def test_aux_weights_follow_the_papers():
    assert create_model("bisenet_r18", 19).aux_weights == [1.0, 1.0]
    assert create_model("icnet_r18", 19).aux_weights == [0.4, 0.4]
    assert create_model("fastscnn", 19).aux_weights == [0.4]


@pytest.mark.parametrize(("name", "expected"), [("fastscnn", 1.11e6), ("bisenet_r18", 13e6)])
def test_parameter_counts_match_the_papers(name, expected):
    count = _n_params(create_model(name, num_classes=19))
    assert abs(count - expected) / expected < 0.10, count


def test_deeplab_output_stride_8_and_16():
    x = torch.randn(1, 3, *SIZE)
    for output_stride in (8, 16):
        model = create_model("deeplabv3plus_r18", 4, output_stride=output_stride).eval()
        assert model.output_stride == output_stride
        with torch.no_grad():
            assert model(x).shape == (1, 4, *SIZE)
        c4 = model.backbone(x)[3]
        assert c4.shape[-2:] == (SIZE[0] // output_stride, SIZE[1] // output_stride)
    with pytest.raises(ConfigError, match="output_stride"):
        create_model("deeplabv3plus_r18", 4, output_stride=32)


def test_channels_last():
    for name in ["fastscnn", "bisenet_r18", "icnet_r18", "deeplabv3plus_r18"]:
        torch.manual_seed(0)
        model = create_model(name, num_classes=3).eval()
        x = torch.randn(1, 3, *SIZE)
        with torch.no_grad():
            reference = model(x)
            model = model.to(memory_format=torch.channels_last)
            out = model(x.to(memory_format=torch.channels_last))
        assert out.shape == reference.shape
        torch.testing.assert_close(out.contiguous(), reference, atol=1e-4, rtol=1e-4)


def test_reset_classifier_changes_every_head():
    model = create_model("icnet_r18", num_classes=19)
    model.reset_classifier(7)
    main, aux = model.train()(torch.randn(2, 3, *SIZE))
    assert model.num_classes == 7 and main.shape[1] == 7 and all(a.shape[1] == 7 for a in aux)


# --- backbones and pretrained weights ---------------------------------------------------------------------------


def test_basic_block_dilation_matches_torchvision_semantics():
    """dilate_resnet (used for ResNet-18, which torchvision refuses to dilate) must do exactly what torchvision's
    replace_stride_with_dilation does; checked on ResNet-50 where both exist."""
    import torchvision

    for dilation in ([False, False, True], [False, True, True]):
        reference = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=dilation)
        ours = torchvision.models.resnet50(weights=None)
        dilate_resnet(ours, dilation)
        ref_convs = [
            (n, m.stride, m.dilation, m.padding) for n, m in reference.named_modules() if isinstance(m, torch.nn.Conv2d)
        ]
        our_convs = [
            (n, m.stride, m.dilation, m.padding) for n, m in ours.named_modules() if isinstance(m, torch.nn.Conv2d)
        ]
        assert our_convs == ref_convs
    backbone = ResNetBackbone("resnet18", [False, True, True])
    assert backbone(torch.randn(1, 3, 64, 64))[3].shape[-2:] == (8, 8)


def _resnet18_state_dict_with_fc(seed: int) -> dict:
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()  # includes fc.*, which must be ignored


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict"])
def test_pretrained_from_a_state_dict_file(tmp_path, wrapper):
    state = _resnet18_state_dict_with_fc(seed=123)
    path = tmp_path / "resnet18.pth"
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 3}, path)
    model = create_model("bisenet_r18", num_classes=4, pretrained=str(path))
    backbone = model.context_path.backbone
    assert torch.equal(backbone.conv1.weight, state["conv1.weight"])
    assert torch.equal(backbone.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
    # and into a dilated ResNet-18 (same parameter shapes)
    model = create_model("deeplabv3plus_r18", num_classes=4, pretrained=path, output_stride=8)
    assert torch.equal(model.backbone.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])


def test_pretrained_file_that_does_not_fit_is_a_config_error_naming_it(tmp_path):
    state = _resnet18_state_dict_with_fc(seed=0)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(ConfigError, match="wrong.pth.*resnet50"):
        create_model("icnet_r50", num_classes=4, pretrained=str(path))  # ResNet-18 weights, ResNet-50 backbone
    del state["layer1.0.conv1.weight"]
    torch.save(state, path)
    with pytest.raises(ConfigError, match="wrong.pth.*missing.*layer1.0.conv1.weight"):
        create_model("bisenet_r18", num_classes=4, pretrained=str(path))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="garbage.pth"):
        create_model("bisenet_r18", num_classes=4, pretrained=str(garbage))


def test_pretrained_from_a_whole_model_checkpoint_takes_its_backbone(tmp_path):
    """A csst-edge checkpoint of a whole model (keys `backbone.*`, saved from DDP here) gives its backbone."""
    from csst_edge.models.checkpoint import save_checkpoint

    torch.manual_seed(5)
    teacher = create_model("deeplabv3plus_r18", num_classes=4)
    state = {f"module.{k}": v for k, v in teacher.state_dict().items()}
    save_checkpoint(tmp_path / "teacher.pt", {"model": state, "arch": "deeplabv3plus_r18", "epoch": 3})
    student = create_model("icnet_r18", num_classes=4, pretrained=tmp_path / "teacher.pt")
    for key, value in teacher.backbone.state_dict().items():
        assert torch.equal(student.backbone.state_dict()[key], value), key


def test_read_state_dict_rejects_what_is_not_a_state_dict(tmp_path):
    from csst_edge.models.backbones import read_state_dict

    for name, obj in (("empty.pth", {}), ("numbers.pth", {"a": 1}), ("list.pth", [torch.zeros(1)])):
        torch.save(obj, tmp_path / name)
        with pytest.raises(ConfigError, match=rf"pretrained weights '.*{name}' are not a state dict of tensors"):
            read_state_dict(tmp_path / name, "backbone.")
    torch.save(
        {"state_dict": {"_orig_mod.backbone.conv1.weight": torch.ones(1), "head.w": torch.zeros(1)}}, tmp_path / "m.pth"
    )
    assert list(read_state_dict(tmp_path / "m.pth", "backbone.")) == ["conv1.weight"]
    assert list(read_state_dict(tmp_path / "m.pth", "backbone.body.")) == ["backbone.conv1.weight", "head.w"]


def test_pretrained_names_that_are_neither_file_nor_weights(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        create_model("bisenet_r18", num_classes=4, pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        create_model("bisenet_r18", num_classes=4, pretrained="IMAGENET_V9")
    with pytest.raises(ConfigError, match="fastscnn has no pretrained backbone"):
        create_model("fastscnn", num_classes=4, pretrained="IMAGENET1K_V1")


# --- exact pyramid pooling ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_size", [(2, 4), (7, 11), (12, 18), (33, 65)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6, (2, 5)])
def test_pyramid_pooling_equals_adaptive_avg_pool(in_size, bins):
    x = torch.randn(2, 8, *in_size, dtype=torch.float64)
    torch.testing.assert_close(adaptive_avg_pool2d_exact(x, bins), F.adaptive_avg_pool2d(x, bins))


def test_pyramid_pooling_exports_without_adaptive_pooling():
    onnx = pytest.importorskip("onnx")

    class Pool(torch.nn.Module):
        def forward(self, x):
            return adaptive_avg_pool2d_exact(x, 6)

    x = torch.randn(1, 4, 7, 11)
    graph = onnx.load_from_string(_export_onnx(Pool(), x)).graph
    assert not {"GlobalAveragePool", "AdaptiveAvgPool2d"} & {n.op_type for n in graph.node}
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(_export_onnx(Pool(), x), providers=["CPUExecutionProvider"])
    out = session.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(out, F.adaptive_avg_pool2d(x, 6).numpy(), atol=1e-6)


# --- ONNX export ----------------------------------------------------------------------------------------------------


def _export_onnx(model, x, dynamic: bool = False) -> bytes:
    # the TorchScript-based exporter: the dynamo one needs onnxscript, which the export extra does not install
    buffer = io.BytesIO()
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            model,
            (x,),
            buffer,
            opset_version=17,
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes=axes if dynamic else None,
        )
    return buffer.getvalue()


@pytest.mark.parametrize("name", [_param(n) for n in STUDENTS + TEACHERS])
def test_onnx_export_matches_pytorch(name):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = create_model(name, num_classes=11).eval()
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(_export_onnx(model, x), providers=["CPUExecutionProvider"])
    out = session.run(None, {"image": x.numpy()})[0]
    assert out.shape == expected.shape == (1, 11, *SIZE)
    assert np.abs(out - expected).max() < 1e-3
    assert (out.argmax(1) == expected.argmax(1)).mean() > 0.999


@pytest.mark.parametrize("name", ["fastscnn", "icnet_r18"])
def test_onnx_export_with_dynamic_size_stays_exact_at_other_sizes(name):
    """The pyramid pooling computes its averaging matrices from the input shape, so a graph exported with
    dynamic height / width is still right at a size it was not traced at."""
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = create_model(name, num_classes=6).eval()
    session = ort.InferenceSession(
        _export_onnx(model, torch.randn(1, 3, *SIZE), dynamic=True), providers=["CPUExecutionProvider"]
    )
    x = torch.randn(2, 3, 96, 160)  # another batch size and an H/32 x W/32 = 3 x 5 map the bins do not divide
    with torch.no_grad():
        expected = model(x).numpy()
    out = session.run(None, {"image": x.numpy()})[0]
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() < 1e-3
