"""What the benchmark scripts share: a recipe dataclass read from the command line, the file of stage records that
makes a benchmark resumable, the rare-class score, and the report's intervals and figures.

Run the scripts as modules from the repository root (`python3 -m benchmarks.camvid_csst ...`), so they import this
one and the installed `csst_edge` without touching `sys.path`.
"""

from __future__ import annotations

import argparse
import json
import typing
from dataclasses import fields
from pathlib import Path
from typing import TypeVar

from csst_edge.fileio import atomic_write_json

# the five thin CamVid classes whose IoU the CSST paper's centroid sampling is for
RARE = ("pole", "sign", "fence", "pedestrian", "bicyclist")

R = TypeVar("R")


def epochs_for(samples: int, per_epoch: int) -> int:
    """Epochs of `per_epoch` samples that come nearest to `samples` training samples (at least one)."""
    return max(1, round(samples / per_epoch))


def rare5(per_class_iou: list[float | None], class_names: list[str]) -> float:
    """Mean IoU (%) of the RARE classes that the dataset has; a class absent from val counts as 0."""
    idx = [class_names.index(c) for c in RARE if c in class_names]
    return 100 * sum(per_class_iou[i] or 0.0 for i in idx) / max(len(idx), 1)


def interval_text(low: float, high: float, digits: int = 1) -> str:
    """A 95 % interval of a fraction (0.035) as mIoU points: "[+3.5, +5.1]"."""
    return f"[{100 * low:+.{digits}f}, {100 * high:+.{digits}f}]"


# ------------------------------------------------------------------------------------------------ recipe options
def recipe_from_argv(
    cls: type[R],
    argv: list[str] | None,
    description: str | None,
    choices: dict[str, tuple[str, ...]] | None = None,
    short: dict[str, str] | None = None,
    help: dict[str, str] | None = None,
) -> R:
    """Every field of the dataclass `cls` as an option of the same name (`teacher_lr` -> `--teacher-lr`), typed by
    its annotation: bools take `--x / --no-x`, tuples comma lists, and 'none' clears an optional field. `choices`
    limits a field's values (tuple fields: each item), `short` adds a one-letter alias (`{"quiet": "-q"}`), `help`
    explains a field (its default is appended). Fields annotated `dict` are not options."""
    choices, short, help = choices or {}, short or {}, help or {}
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = cls()
    hints = typing.get_type_hints(cls)
    options = [f for f in fields(cls) if typing.get_origin(hints[f.name]) is not dict and hints[f.name] is not dict]
    for f in options:
        flags = [short[f.name]] if f.name in short else []
        flags.append("--" + f.name.replace("_", "-"))
        value = getattr(defaults, f.name)
        if hints[f.name] is bool:
            ap.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=value)
            continue
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        text = f"{help[f.name]} (default {shown})" if f.name in help else f"default {shown}"
        ap.add_argument(*flags, dest=f.name, default=None, help=text.replace("%", "%%"))
    args = vars(ap.parse_args(argv))
    values = {}
    for f in options:
        text = args[f.name]
        if text is None or hints[f.name] is bool:
            if text is not None:
                values[f.name] = text
            continue
        option = "--" + f.name.replace("_", "-")
        try:
            values[f.name] = _convert(hints[f.name], text)
        except ValueError:
            ap.error(f"{option}: cannot read {text!r} as {hints[f.name]}")
        allowed = choices.get(f.name)
        picked = values[f.name] if isinstance(values[f.name], tuple) else (values[f.name],)
        unknown = [v for v in picked if allowed is not None and v not in allowed]
        if unknown:
            ap.error(f"{option}: unknown {', '.join(map(str, unknown))}; choose from {', '.join(allowed)}")
    return cls(**values)


def _convert(tp, text: str):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if type(None) in typing.get_args(tp):
        if text.lower() in ("none", "null"):
            return None
        tp = args[0]
    if tp is Path:
        return Path(text)
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        return tuple(item(v) for v in text.split(",") if v)
    return tp(text)


# ------------------------------------------------------------------------------------------------ stage records
class StageLog:
    """The JSON file of a benchmark's finished stages ({..header.., "stages": {name: record}}). Every write re-reads
    the file first, so runs with other suffixes sharing the folder keep each other's stages; writes are atomic, so
    a killed run never leaves half a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.is_file() else {"stages": {}}

    def stages(self) -> dict:
        return self.load()["stages"]

    def save(self, name: str, record: dict, **header) -> dict:
        state = self.load()
        state.update(header)
        state["stages"][name] = record
        atomic_write_json(self.path, state)
        return state


# ------------------------------------------------------------------------------------------------ figures
def axes(figsize: tuple[float, float] = (8, 4.5)):
    """A (figure, axes) pair from matplotlib's file-only backend: benchmarks run on machines without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Write `fig` to `path` atomically (a temporary file, then a rename) and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)
    return path
