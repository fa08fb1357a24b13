"""ResNet-family backbones from torchvision, and loading their pretrained weights.

The backbone keeps torchvision's parameter names (`conv1`, `bn1`, `layer1`...), so a torchvision ImageNet state
dict, or any ResNet checkpoint saved from torchvision, loads into it unchanged (minus the classifier `fc.*`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from csst_edge.errors import ConfigError
from csst_edge.models.checkpoint import clean_state_dict

RESNET_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d")


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its pooling and classifier; `forward` returns the four stage outputs
    (strides 4, 8, 16, 32 unless dilated). Models that need the stages separately call `stem` / `layerN`."""

    def __init__(self, arch: str, replace_stride_with_dilation: Sequence[bool] = (False, False, False)):
        super().__init__()
        if arch not in RESNET_ARCHS:
            raise ConfigError(f"unknown backbone '{arch}'; available: {', '.join(RESNET_ARCHS)}")
        dilation = list(replace_stride_with_dilation)
        resnet_fn = getattr(torchvision.models, arch)
        if any(dilation) and _uses_basic_blocks(arch):
            # torchvision's BasicBlock refuses dilation > 1, so build it plain and dilate it the same way after.
            resnet = resnet_fn(weights=None)
            dilate_resnet(resnet, dilation)
        else:
            resnet = resnet_fn(weights=None, replace_stride_with_dilation=dilation)
        self.arch = arch
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.channels = tuple(_out_channels(layer) for layer in (self.layer1, self.layer2, self.layer3, self.layer4))

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.layer1(self.stem(x))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return [c1, c2, c3, self.layer4(c3)]


def build_backbone(
    arch: str,
    pretrained: str | Path | None = None,
    replace_stride_with_dilation: Sequence[bool] = (False, False, False),
) -> ResNetBackbone:
    backbone = ResNetBackbone(arch, replace_stride_with_dilation)
    if pretrained is not None:
        load_backbone_weights(backbone, pretrained)
    return backbone


def output_stride_dilation(output_stride: int) -> list[bool]:
    """replace_stride_with_dilation for layer2..4 that gives a ResNet the wanted output stride."""
    options = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}
    if output_stride not in options:
        raise ConfigError(f"output_stride must be one of {sorted(options)}, got {output_stride!r}")
    return options[output_stride]


def dilate_resnet(resnet: nn.Module, replace_stride_with_dilation: Sequence[bool]) -> None:
    """Turn strides of layer2..4 into dilations in place, exactly as torchvision's `replace_stride_with_dilation`
    does at construction (a dilated stage's first block keeps the previous dilation, the others get the new
    one). Works for BasicBlock nets, which torchvision refuses to dilate; parameter names and shapes are
    unchanged, so pretrained weights still load."""
    current = 1
    for layer, dilate in zip((resnet.layer2, resnet.layer3, resnet.layer4), replace_stride_with_dilation, strict=True):
        previous = current
        if dilate:
            current *= 2
        for index, block in enumerate(layer):
            block_dilation = previous if index == 0 else current
            for conv in block.modules():
                if not isinstance(conv, nn.Conv2d):
                    continue
                if dilate and conv.stride == (2, 2):
                    conv.stride = (1, 1)
                if conv.kernel_size == (3, 3):
                    conv.dilation = (block_dilation, block_dilation)
                    conv.padding = (block_dilation, block_dilation)


def load_backbone_weights(backbone: ResNetBackbone, pretrained: str | Path) -> None:
    """Load backbone weights from a local file or a torchvision weights name; errors name the file / name."""
    source = str(pretrained)
    if Path(source).is_file():
        state = read_state_dict(Path(source), "backbone.")  # a DeepLabV3+ / ICNet checkpoint: its backbone
    else:
        state = _torchvision_state_dict(backbone.arch, source)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # ImageNet classifier: not ours
    expected = backbone.state_dict()
    check_weights_fit(expected, state, source, backbone.arch)
    backbone.load_state_dict(state)


def check_weights_fit(expected: dict, state: dict, source: str, arch: str) -> None:
    """Every tensor of `expected` must come from `state` with the same shape, and nothing else; else a
    ConfigError that names the missing, unexpected and wrong-shape keys."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong_shape:
        problems = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
                problems.append(f"{len(keys)} {label}: {', '.join(keys[:3])}{more}")
        raise ConfigError(f"pretrained weights '{source}' do not fit the {arch} backbone: " + "; ".join(problems))


def read_state_dict(path: Path, model_prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of a pretrained-weights file: a bare state dict or a training checkpoint's `model` /
    `state_dict`, saved from DDP / torch.compile or not. A whole segmentation model's checkpoint (keys under
    `model_prefix`: `backbone.` for the ResNet backbones, `backbone.body.` for the timm ones) gives only its
    backbone's tensors, with the prefix removed. Anything else is a ConfigError naming the file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"cannot read pretrained weights '{path}': {e}") from None
    for key in ("model", "state_dict"):  # a training checkpoint rather than a bare state dict
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"pretrained weights '{path}' are not a state dict of tensors")
    state = clean_state_dict(obj)
    if any(k.startswith(model_prefix) for k in state):
        state = {k.removeprefix(model_prefix): v for k, v in state.items() if k.startswith(model_prefix)}
    return state


def _torchvision_state_dict(arch: str, weights_name: str) -> dict[str, torch.Tensor]:
    weights_enum = torchvision.models.get_model_weights(arch)
    name = weights_name.split(".")[-1]  # accept "ResNet18_Weights.IMAGENET1K_V1" as well as "IMAGENET1K_V1"
    names = [w.name for w in weights_enum]
    if name not in names and name != "DEFAULT":
        looks_like_path = any(c in weights_name for c in "/\\") or weights_name.endswith((".pt", ".pth", ".bin"))
        what = "file not found" if looks_like_path else "neither a file nor a torchvision weights name"
        raise ConfigError(
            f"pretrained '{weights_name}': {what} (torchvision weights for {arch}: {', '.join(names)}, DEFAULT)"
        )
    weights = weights_enum[name]
    try:
        return weights.get_state_dict(progress=False)
    except Exception as e:  # noqa: BLE001 - offline machines end up here
        raise ConfigError(
            f"cannot download torchvision weights {weights} from {weights.url} ({e}); "
            "download the file elsewhere and pass its path instead"
        ) from None


def _uses_basic_blocks(arch: str) -> bool:
    return arch in ("resnet18", "resnet34")


def _out_channels(layer: nn.Sequential) -> int:
    last_block = layer[-1]
    return last_block.bn2.num_features if isinstance(last_block, BasicBlock) else last_block.bn3.num_features
