"""`csst-edge round`: harvested frames → pseudo labels → next student → gate → export → report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csst_edge.cli.common import (
    DataWorkers,
    QuietBars,
    ShortDevice,
    console,
    deprecated,
    fail,
    out_option,
    renamed,
    settings_from,
)
from csst_edge.sizes import parse_hw

_HELP = {  # help texts too long to stand on their option's line, by parameter name
    "harvests": "Harvest folders (`runtime run --harvest`), one per vehicle or drive; or URLs: a harvest folder in a "
    "bucket, a `runtime sync` vehicle prefix, or the sync destination (every vehicle below it). "
    "key=value arguments are training overrides (as in `csst-edge train`), e.g. optim.lr=0.02.",
    "teacher": "Teacher checkpoint (path or URL) that pseudo-labels the harvested frames.",
    "student": "Current (deployed) student checkpoint (path or URL): the gate's reference.",
    "data": "Labelled dataset YAML; its train split is trained on with the pseudo labels.",
    "out": "Round folder (frames, pseudo, centroids.npz, student/, promoted/, round.md, round.json).",
    "init": "student (continue the current one: the measured default) or scratch (a new student, as CSST does).",
    "config": "Student training config YAML (default: the current student's own config).",
    "previous": "The last round's folder: its pseudo folders and centroid index carry over, so this round trains "
    "on at least what that one did.",
    "sampling": "centroid (every class equally often, CSST) or random; 'config' keeps the config's.",
    "real_fraction": "Share of real labels in every batch (0..1), 'proportional', or 'config'.",
    "pseudo_scales": "Teacher scales for the pseudo labels, comma-separated ('1' = single scale).",
    "previous_pseudo": "Pseudo-label folders (or URLs) of earlier rounds to keep training on (repeatable).",
    "duplicate_similarity": "Frames at least this similar across harvests are merged (best score kept).",
    "threshold": "Pseudo-label pixels below this teacher confidence become ignore.",
    "engine": "Pseudo-labelling engine: local, or ray (one actor per GPU; on a multi-node cluster --out must be "
    "on storage every node reads).",
    "address": "--engine ray: join this Ray cluster ('auto'); default: start Ray here.",
    "gate": "miou (the 95 % bootstrap interval of ΔmIoU lies above -margin), per-class (and no class IoU "
    "falls beyond --class-margin), always.",
    "margin": "Points: promote when the ΔmIoU interval's lower end is above -margin "
    "(0 = only a detectably better student; 0.5 = not detectably worse by half a point).",
    "class_margin": "per-class gate: allowed IoU drop of any class, in points.",
    "bootstrap_resamples": "Paired bootstrap resamples of the val images for the ΔmIoU interval.",
    "export_size": "HEIGHTxWIDTH of the exported model (default: the harvested frames' size).",
    "export_head": "What the exported graph returns (`export onnx --head`): probs (the harvester's uncertainty needs "
    "it), logits or labels.",
}

# the old spellings, hidden: each still works, with a deprecation line
OldSet = Annotated[
    list[str] | None, typer.Option("--set", hidden=True, help="Deprecated: give key=value as an argument.")
]
OldExportOutput = Annotated[str | None, typer.Option("--export-output", hidden=True, help="Deprecated: --export-head.")]


def round_command(
    harvests: Annotated[list[str], typer.Argument(help=_HELP["harvests"], metavar="HARVEST|KEY=VALUE")],
    teacher: Annotated[str, typer.Option(help=_HELP["teacher"])],
    student: Annotated[str, typer.Option(help=_HELP["student"])],
    data: Annotated[str, typer.Option(help=_HELP["data"])],
    val: Annotated[str, typer.Option(help="Fixed labelled dataset YAML the current and new student are compared on.")],
    out: Annotated[Path, out_option(_HELP["out"])],
    val_split: Annotated[str, typer.Option(help="Split of --val.")] = "val",
    init: Annotated[str, typer.Option(help=_HELP["init"])] = "student",
    config: Annotated[Path | None, typer.Option(help=_HELP["config"])] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs of the new student.")] = None,
    previous: Annotated[Path | None, typer.Option(help=_HELP["previous"])] = None,
    sampling: Annotated[str, typer.Option(help=_HELP["sampling"])] = "centroid",
    real_fraction: Annotated[str, typer.Option(help=_HELP["real_fraction"])] = "0.5",
    pseudo_scales: Annotated[str, typer.Option(help=_HELP["pseudo_scales"])] = "0.75,1.0,1.25,1.5",
    previous_pseudo: Annotated[list[str] | None, typer.Option(help=_HELP["previous_pseudo"])] = None,
    index: Annotated[Path | None, typer.Option(help="Previous round's centroid index, updated incrementally.")] = None,
    duplicate_similarity: Annotated[float, typer.Option(help=_HELP["duplicate_similarity"])] = 0.95,
    flip: Annotated[bool, typer.Option(help="Flip test-time augmentation for the pseudo labels.")] = True,
    threshold: Annotated[float | None, typer.Option(help=_HELP["threshold"])] = None,
    engine: Annotated[str, typer.Option(help=_HELP["engine"])] = "local",
    address: Annotated[str | None, typer.Option(help=_HELP["address"])] = None,
    gate: Annotated[str, typer.Option(help=_HELP["gate"])] = "miou",
    margin: Annotated[float, typer.Option(help=_HELP["margin"])] = 0.0,
    class_margin: Annotated[float, typer.Option(help=_HELP["class_margin"])] = 5.0,
    bootstrap_resamples: Annotated[int, typer.Option(help=_HELP["bootstrap_resamples"])] = 1000,
    export_size: Annotated[str | None, typer.Option(help=_HELP["export_size"])] = None,
    export_head: Annotated[str, typer.Option(help=_HELP["export_head"])] = "probs",
    device: ShortDevice = "auto",
    workers: DataWorkers = 2,
    quiet: QuietBars = False,
    set_: OldSet = None,
    old_export_output: OldExportOutput = None,
) -> None:
    """Run the next self-training round from harvested frames, and promote the new student only if the fixed val
    set shows it is not worse: a paired bootstrap over the val images gives a 95 % interval for ΔmIoU, and the
    gate wants its lower end above -margin.

    Examples:

      csst-edge round /data/car1/harvest /data/car2/harvest --teacher teacher.pt --student student.pt \\
          --data cityA.yaml --val cityB_val.yaml -o rounds/r01

      csst-edge round harvest2 --teacher t.pt --student rounds/r01/promoted/student.pt --data camvid \\
          --val camvid_newdrive -o rounds/r02 --previous rounds/r01 --gate per-class --class-margin 3

      csst-edge round s3://fleet-bucket/fleet --teacher s3://fleet-bucket/models/teacher.pt \\
          --student s3://fleet-bucket/models/student.pt --data cityA.yaml --val cityB_val.yaml -o rounds/r03

      csst-edge round harvest --teacher t.pt --student s.pt --data d.yaml --val v.yaml -o r04 optim.lr=0.02 epochs=40
    """
    from csst_edge.pipeline.round import run_round

    harvests, overrides = _harvests_and_overrides(harvests, set_)
    export_head = renamed(export_head, old_export_output, "--export-head", "--export-output", default="probs")
    report = run_round(_round_settings(locals()), console=None if quiet else console, progress=not quiet)
    _print_report(report)


def _round_settings(params: dict):
    """RoundSettings from the command's parameters; what is not a plain copy is converted here."""
    from csst_edge.pipeline.round import RoundSettings

    export_size, sampling = params["export_size"], params["sampling"]
    return settings_from(
        RoundSettings,
        params,
        export_size=parse_hw(export_size, "--export-size") if export_size else None,
        pseudo_scales=_pseudo_scales(params["pseudo_scales"]),
        previous_pseudo=list(params["previous_pseudo"] or []),
        sampling=None if sampling == "config" else sampling,
        real_fraction=_real_fraction(params["real_fraction"]),
        pseudo_flip=params["flip"],
        pseudo_threshold=params["threshold"],
        pseudo_engine=params["engine"],
        ray_address=params["address"],
        margin=params["margin"] / 100.0,  # points on the command line, fractions in the library
        class_margin=params["class_margin"] / 100.0,
        export_output=params["export_head"],
    )


def _harvests_and_overrides(arguments: list[str], old_set: list[str] | None) -> tuple[list[str], list[str]]:
    """The positional arguments split into harvests and key=value overrides, plus the deprecated --set ones."""
    harvests, overrides = split_overrides(arguments)
    if old_set:
        deprecated("--set k=v", "k=v as an argument")
        overrides += list(old_set)
    if not harvests:
        fail("give at least one harvest folder or URL (key=value arguments are training overrides)")
    return harvests, overrides


def _print_report(report: dict) -> None:
    d = report["decision"]
    before, after = 100 * report["before"]["miou"], 100 * report["after"]["miou"]
    verdict = "[green]promoted[/]" if d["promote"] else "[yellow]rejected[/]"
    console.print(
        f"{verdict}: mIoU {before:.1f} → {after:.1f} ({d['reason']}); "
        f"{report['data_added']['frames_kept']} frames added; report {Path(report['round']) / 'round.md'}"
    )
    if report["export"]:
        console.print(f"exported {report['export']['onnx']}")


def split_overrides(arguments: list[str]) -> tuple[list[str], list[str]]:
    """(harvests, key=value overrides): an argument is an override when it starts with a config key and '='
    (a URL has its '://' first) and is not an existing path."""
    import re

    harvests, overrides = [], []
    for arg in arguments:
        is_override = re.match(r"^[A-Za-z_][A-Za-z0-9_.]*=", arg) is not None and not Path(arg).exists()
        (overrides if is_override else harvests).append(arg)
    return harvests, overrides


def _scales(text: str) -> tuple[float, ...]:
    from csst_edge.errors import ConfigError

    try:
        scales = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--pseudo-scales must be comma-separated numbers, got {text!r}") from None
    if not scales or min(scales) <= 0:
        raise ConfigError(f"--pseudo-scales must be positive numbers, got {text!r}")
    return scales


def _pseudo_scales(text: str) -> tuple[float, ...]:
    """The teacher's scales; one scale 1 is () for the library: no multi-scale test-time augmentation."""
    scales = _scales(text)
    return scales if scales != (1.0,) else ()


def _real_fraction(text: str) -> float | str | None:
    from csst_edge.errors import ConfigError

    if text in ("config", "proportional"):
        return None if text == "config" else text
    try:
        return float(text)
    except ValueError:
        raise ConfigError(
            f"--real-fraction must be a number in [0, 1], 'proportional' or 'config'; got {text!r}"
        ) from None
