"""Model registry, timm style: one decorator and one dict.

An entry point is a function `name(num_classes, pretrained=None, **kwargs) -> nn.Module`; its function name is the
model name used in configs, checkpoints (`arch`) and on the command line.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from csst_edge.errors import ConfigError

MODEL_KINDS = ("student", "teacher")

# name -> entry point; the kind ("student" / "teacher") is kept on the function as `model_kind`.
_model_entrypoints: dict[str, Callable[..., nn.Module]] = {}


def register_model(kind: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register the decorated entry point under its function name as a `kind` ("student" or "teacher") model."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _model_entrypoints and _model_entrypoints[name] is not fn:
            raise ValueError(f"model '{name}' is registered twice")
        fn.model_kind = kind  # type: ignore[attr-defined]
        _model_entrypoints[name] = fn
        return fn

    return decorator


def list_models(kind: str | None = None) -> list[str]:
    """Registered model names, sorted; only students or teachers when `kind` is given."""
    if kind is not None and kind not in MODEL_KINDS:
        raise ConfigError(f"model kind must be one of {', '.join(MODEL_KINDS)}, got '{kind}'")
    return sorted(n for n, fn in _model_entrypoints.items() if kind is None or fn.model_kind == kind)


def model_kind(name: str) -> str:
    """'student' or 'teacher' for a registered model name."""
    return _entrypoint(name).model_kind


def create_model(name: str, num_classes: int, pretrained: str | None = None, **kwargs) -> nn.Module:
    """Build a registered model.

    `pretrained` (backbone only): None, a local weight file, or a torchvision weights name ("IMAGENET1K_V1").
    Extra keyword arguments go to the entry point (e.g. `output_stride=8`, `aux=False`); unknown ones are a
    ConfigError naming the option and the ones the model accepts.
    """
    entrypoint = _entrypoint(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    signature = inspect.signature(entrypoint)
    try:
        signature.bind(num_classes=num_classes, pretrained=pretrained, **kwargs)
    except TypeError as e:
        options = [p for p in signature.parameters if p not in ("num_classes", "pretrained")]
        raise ConfigError(f"model '{name}': {e}; its options are: {', '.join(options) or '(none)'}") from None
    return entrypoint(num_classes=num_classes, pretrained=pretrained, **kwargs)


def _entrypoint(name: str) -> Callable[..., nn.Module]:
    try:
        return _model_entrypoints[name]
    except KeyError:
        raise ConfigError(f"unknown model '{name}'; registered models: {', '.join(list_models())}") from None
