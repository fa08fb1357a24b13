"""Typed training config: defaults < YAML file < `key=value` overrides. Unknown keys are errors naming the key.

Overrides use dotted paths and YAML values: `epochs=50 optim.lr=0.02 crop=[384,384] train.0.split=val`.
The resolved config is saved as `config.yaml` in the run directory, so a run can always be reproduced.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from csst_edge import storage
from csst_edge.data.selection import SourceConfig
from csst_edge.errors import ConfigError
from csst_edge.fileio import read_yaml_mapping
from csst_edge.sizes import parse_hw
from csst_edge.train.loggers import logger_names


@dataclass
class OptimConfig:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    warmup_iters: int = 0
    warmup_ratio: float = 0.1  # LR starts at lr * warmup_ratio and rises linearly


@dataclass
class LossConfig:
    name: str = "ce"  # ce | ohem
    ohem_thresh: float = 0.7
    ohem_min_kept: int = 100_000
    aux: bool = True  # add the model's auxiliary heads with their published weights


@dataclass
class AugmentConfig:
    scale: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    blur: float = 0.5  # probability
    jitter: float = 0.1


@dataclass
class TrainConfig:
    model: str = "fastscnn"
    model_kwargs: dict = field(default_factory=dict)
    pretrained: str | None = None
    train: list[SourceConfig] = field(default_factory=list)
    val: SourceConfig | None = None
    epochs: int = 100
    samples_per_epoch: int | None = None  # default: number of training images
    batch_size: int = 8  # global batch (split over DDP ranks) at the base crop
    crop: tuple[int, int] = (512, 512)
    crop_schedule: str = "constant"  # constant | coarse2fine | fine2coarse | coarse2fine+ | fine2coarse+
    crop_scales: tuple[float, ...] = (0.5, 0.75, 1.0)
    max_batch: int | None = None
    sampling: str = "random"  # random | centroid
    class_uniform_fraction: float = 1.0  # with centroid sampling: share of class-uniform samples
    min_area: int = 16
    real_fraction: float | None = None  # share of real (vs pseudo) samples in every batch; None = proportional
    # share of the epochs, at the end of the run, that train on the real labels alone: the student learns from
    # real + pseudo first, then its last epochs (at the poly schedule's low LR) correct what the pseudo labels
    # taught wrong, mostly thin classes, from the ground truth. The total iterations stay the same.
    real_only_tail: float = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # student | finetune | consistency | soft | mr  (paper Table 2 ablations) | fewshot (start from the `pretrained`
    # checkpoint, with a fresh classifier head when its class count differs: `csst-edge finetune`)
    method: str = "student"
    mr_weight: float = 0.1  # method mr: weight of the model regularizer (Eq. 7)
    refresh_every: int = 1  # method consistency: epochs between online pseudo-label refreshes
    amp: str = "none"  # none | fp16 | bf16 (CUDA only)
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = True  # with DDP on CUDA
    device: str = "auto"
    workers: int = 2
    eval_every: int = 1
    eval_batch_size: int = 1
    seed: int = 0
    out: str = "runs/train"
    log_every: int = 10  # iterations between metrics.jsonl step lines
    logger: list[str] = field(default_factory=list)  # tensorboard, mlflow: besides metrics.jsonl (train/loggers.py)
    mlflow_tracking_uri: str | None = None  # default $MLFLOW_TRACKING_URI, else a local SQLite store in ./mlruns
    mlflow_experiment: str = "csst-edge"


_ENUMS = {
    "crop_schedule": ("constant", "coarse2fine", "fine2coarse", "coarse2fine+", "fine2coarse+"),
    "sampling": ("random", "centroid"),
    "method": ("student", "finetune", "consistency", "soft", "mr", "fewshot"),
    "amp": ("none", "fp16", "bf16"),
    "loss.name": ("ce", "ohem"),
}


def load_train_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """The config of a YAML file (or the defaults) with command-line `key=value` overrides: what the CLI calls."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        raw = read_yaml_mapping(path, ConfigError, "config")
    return train_config_from_dict(raw, parse_overrides(overrides or []))


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`key=value` strings (dotted keys, YAML values) as {dotted key: value}: the one place `k=v` text is parsed."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' must look like key=value")
        parsed[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return parsed


def train_config_from_dict(raw: dict[str, Any], overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A recipe as data: a nested dict of config keys (as in a YAML file), then `overrides` as {dotted key: value},
    checked and typed like a file. Library code and benchmarks build their configs with this, never as YAML text,
    so a path with a quote or a colon in it is just a string."""
    raw = _plain_copy(raw)
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, _plain_copy(value))
    cfg = _build(TrainConfig, raw, "")
    _check(cfg)
    return cfg


def _plain_copy(value: Any) -> Any:
    """A deep copy with dataclasses (a SourceConfig) and paths turned into plain dicts and strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _plain_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_copy(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            idx = int(part)
            while len(node) <= idx:
                node.append({})
            node = node[idx]
        else:
            node = node.setdefault(part, [] if parts[i + 1].isdigit() else {})
    if isinstance(node, list):
        idx = int(parts[-1])
        while len(node) <= idx:
            node.append({})
        node[idx] = value
    else:
        node[parts[-1]] = value


def _build(cls, raw: Any, prefix: str):
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or 'root'}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), sorted(names), n=1)
        hint = f"did you mean '{prefix}{close[0]}'? " if close else ""
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' ({hint}valid keys here: {', '.join(sorted(names))})"
        )
    kwargs = {k: _coerce(hints[k], v, f"{prefix}{k}") for k, v in raw.items()}
    return cls(**kwargs)


def _coerce(tp, value, key: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else _build(tp, value, key + ".")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(args[0], v, f"{key}.{i}") for i, v in enumerate(value)]
    if origin is tuple:
        if isinstance(value, (int, float)):
            value = [value, value] if args and args[-1] is not Ellipsis and len(args) == 2 else [value]
        if isinstance(value, str) and list(args) == [int, int]:  # "384x768" for sizes
            value = parse_hw(value, f"config key '{key}'")
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' expects a list, got {value!r}")
        item_types = [args[0]] * len(value) if (len(args) == 2 and args[1] is Ellipsis) else list(args)
        if len(item_types) != len(value):
            raise ConfigError(f"config key '{key}' expects {len(item_types)} values, got {len(value)}")
        return tuple(_coerce(t, v, key) for t, v in zip(item_types, value, strict=False))
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' expects a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' expects true/false, got {value!r}")
    if tp in (int, float, str):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}' expects {tp.__name__}, got {value!r}") from None
    return value


def _check(cfg: TrainConfig) -> None:
    for key, allowed in _ENUMS.items():
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if value not in allowed:
            raise ConfigError(f"config key '{key}' is '{value}'; choose one of {', '.join(allowed)}")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ConfigError("config keys 'epochs' and 'batch_size' must be >= 1")
    if cfg.real_fraction is not None and not 0.0 <= cfg.real_fraction <= 1.0:
        raise ConfigError(f"config key 'real_fraction' must be in [0, 1], got {cfg.real_fraction}")
    if not 0.0 <= cfg.real_only_tail < 1.0:
        raise ConfigError(f"config key 'real_only_tail' must be in [0, 1), got {cfg.real_only_tail}")
    cfg.logger = logger_names(cfg.logger)
    if cfg.mlflow_tracking_uri and urlsplit(cfg.mlflow_tracking_uri).password is not None:
        # the URI is saved in config.yaml and the checkpoints; MLflow reads credentials from the environment
        raise ConfigError(
            "config key 'mlflow_tracking_uri' holds a password, which would be saved with the run: "
            "give it in MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) instead"
        )
    for i, src in enumerate(cfg.train):
        if (src.data is None) == (src.pseudo is None):
            raise ConfigError(f"config key 'train.{i}': give exactly one of 'data' (dataset YAML) or 'pseudo' (folder)")
        if src.every < 1 or not 0 <= src.offset < src.every:
            raise ConfigError(f"config key 'train.{i}': need every >= 1 and 0 <= offset < every")
        if src.block < 1:
            raise ConfigError(f"config key 'train.{i}.block' must be >= 1, got {src.block}")
        if src.shots is not None and src.shots < 1:
            raise ConfigError(f"config key 'train.{i}.shots' must be >= 1, got {src.shots}")
    # pretrained, pseudo / data sources, the tracking URI...: every URL is saved in config.yaml and the checkpoints
    _refuse_url_secrets(config_to_dict(cfg), "")


def _refuse_url_secrets(value: Any, key: str) -> None:
    """A ConfigError naming the key of the first URL that carries credentials (user info, a token or signature in
    its query); the URL itself is not repeated."""
    if isinstance(value, dict):
        for k, v in value.items():
            _refuse_url_secrets(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _refuse_url_secrets(v, f"{key}.{i}")
    elif isinstance(value, str) and (what := storage.url_secret(value)):
        raise ConfigError(
            f"config key '{key}' is a URL with {what} ({storage.redact(value)}), which would be saved with the run: "
            "give credentials in the environment (AWS_ACCESS_KEY_ID ..., MLFLOW_TRACKING_TOKEN) instead"
        )


def config_to_dict(cfg: TrainConfig) -> dict:
    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def dump_config(cfg: TrainConfig) -> str:
    """The config as YAML (config.yaml, and what checkpoints keep), every URL without user info or secret query
    values, also for a config that was built without the checks."""
    return yaml.safe_dump(_redacted(config_to_dict(cfg)), sort_keys=False)


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, str) and storage.url_secret(value):
        return storage.redact(value)
    return value
