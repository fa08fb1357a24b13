"""The metadata an exported model carries, so the runtime needs no checkpoint, config or dataset YAML.

ONNX models keep it in `metadata_props`, one key per field, each value a JSON string (readable in Netron and by
`onnxruntime`'s `get_modelmeta().custom_metadata_map`). TensorRT engines cannot carry it, so they get a sidecar
JSON next to the engine (`model.engine` → `model.engine.json`) with the same fields.

Torch-free on purpose: the vehicle imports this module.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from csst_edge.errors import CsstError

KEY_PREFIX = "csst_edge."
FORMAT_VERSION = 1
INPUT_LAYOUTS = ("nhwc", "nchw")
OUTPUT_KINDS = ("logits", "probs", "labels")


class ModelMetaError(CsstError):
    """An exported model has no (or unreadable) csst-edge metadata; the message names the file."""


@dataclass
class ModelMeta:
    """Everything needed to feed an exported model and read its output.

    Input: uint8 RGB frames of `input_height` x `input_width` in `input_layout`; normalisation with `mean`/`std`
    happens inside the graph. A `dynamic` model accepts other batch sizes and frame sizes (height/width None
    then mean "any"; the export size is kept in `export_height`/`export_width`).
    """

    arch: str
    num_classes: int
    class_names: list[str]
    palette: list[list[int]]
    mean: list[float]
    std: list[float]
    input_height: int | None
    input_width: int | None
    batch: int | None = 1
    dynamic: bool = False
    input_layout: str = "nhwc"
    input_name: str = "image"
    output_kind: str = "labels"
    output_name: str = "labels"
    precision: str = "fp32"
    checkpoint_sha256: str | None = None
    checkpoint: str | None = None
    version: str | None = None
    opset: int | None = None
    export_height: int | None = None
    export_width: int | None = None
    ignore_index: int = 255
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "metadata") -> ModelMeta:
        known = {f.name for f in fields(cls)}
        missing = [k for k in ("arch", "num_classes", "class_names", "mean", "std") if k not in raw]
        if missing:
            raise ModelMetaError(f"{source}: csst-edge metadata lacks {', '.join(missing)}")
        values = {k: v for k, v in raw.items() if k in known}
        extra = dict(values.pop("extra", None) or {})
        extra.update({k: v for k, v in raw.items() if k not in known})  # newer writers' fields survive a round trip
        values.setdefault("palette", [[0, 0, 0]] * int(raw["num_classes"]))
        values.setdefault("input_height", None)
        values.setdefault("input_width", None)
        meta = cls(**values, extra=extra)
        if meta.input_layout not in INPUT_LAYOUTS:
            raise ModelMetaError(f"{source}: input_layout must be one of {INPUT_LAYOUTS}, got {meta.input_layout!r}")
        if meta.output_kind not in OUTPUT_KINDS:
            raise ModelMetaError(f"{source}: output_kind must be one of {OUTPUT_KINDS}, got {meta.output_kind!r}")
        return meta

    def input_shape(self, batch: int | None = None, height: int | None = None, width: int | None = None) -> tuple:
        """The input tensor shape for a batch (dynamic dims filled from the arguments, else the export size)."""
        n = batch or self.batch or 1
        h = height or self.input_height or self.export_height
        w = width or self.input_width or self.export_width
        return (n, h, w, 3) if self.input_layout == "nhwc" else (n, 3, h, w)


# ---------------------------------------------------------------------------------------------------- ONNX
def to_metadata_props(meta: ModelMeta) -> dict[str, str]:
    """One `csst_edge.<field>` key per field, JSON-encoded values."""
    return {KEY_PREFIX + k: json.dumps(v) for k, v in meta.to_dict().items()}


def from_metadata_props(props: dict[str, str], source: str = "model") -> ModelMeta:
    raw = {}
    for key, value in props.items():
        if not key.startswith(KEY_PREFIX):
            continue
        try:
            raw[key[len(KEY_PREFIX) :]] = json.loads(value)
        except json.JSONDecodeError:
            raise ModelMetaError(f"{source}: metadata key {key!r} is not valid JSON") from None
    if not raw:
        raise ModelMetaError(f"{source}: no csst-edge metadata (was it exported with `csst-edge export onnx`?)")
    return ModelMeta.from_dict(raw, source)


def set_onnx_metadata(model_proto, meta: ModelMeta) -> None:
    """Replace the csst-edge keys in an `onnx.ModelProto`'s metadata_props (other keys are kept)."""
    props = to_metadata_props(meta)
    keep = [(p.key, p.value) for p in model_proto.metadata_props if not p.key.startswith(KEY_PREFIX)]
    del model_proto.metadata_props[:]
    for key, value in keep + sorted(props.items()):
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_onnx_metadata(path: str | os.PathLike) -> ModelMeta:
    """Metadata of an ONNX file, read with `onnx` (weights not loaded) or, where onnx is absent, onnxruntime."""
    path = Path(path)
    if not path.is_file():
        raise ModelMetaError(f"{path}: model file not found")
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as e:
            raise ModelMetaError(f"{path}: not a readable ONNX model ({type(e).__name__}: {str(e)[:200]})") from None
        return from_metadata_props({p.key: p.value for p in proto.metadata_props}, str(path))
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelMetaError(f"{path}: not a readable ONNX model ({type(e).__name__}: {str(e)[:200]})") from None
    return from_metadata_props(dict(session.get_modelmeta().custom_metadata_map), str(path))


# ------------------------------------------------------------------------------------------------ sidecar
def sidecar_path(model_path: str | os.PathLike) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def write_sidecar(model_path: str | os.PathLike, meta: ModelMeta) -> Path:
    from csst_edge.fileio import atomic_write_json

    path = sidecar_path(model_path)
    atomic_write_json(path, meta.to_dict())
    return path


def read_sidecar(model_path: str | os.PathLike) -> ModelMeta:
    path = sidecar_path(model_path)
    if not path.is_file():
        raise ModelMetaError(
            f"{path}: metadata sidecar not found (expected next to the engine {Path(model_path).name})"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelMetaError(f"{path}: not a readable metadata JSON ({e})") from None
    return ModelMeta.from_dict(raw, str(path))


def read_model_meta(model_path: str | os.PathLike) -> ModelMeta:
    """Metadata of an exported model: ONNX metadata_props, or the sidecar JSON of an engine."""
    model_path = Path(model_path)
    if model_path.suffix.lower() == ".onnx":
        return read_onnx_metadata(model_path)
    return read_sidecar(model_path)
