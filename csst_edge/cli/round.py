"""`csst-edge round`: harvested frames → pseudo labels → next student → gate → export → report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csst_edge.cli.common import console, deprecated, fail, renamed
from csst_edge.sizes import parse_hw


def round_command(
    harvests: Annotated[
        list[str],
        typer.Argument(
            help="Harvest folders (`runtime run --harvest`), one per vehicle or drive; or URLs: a harvest folder in a "
            "bucket, a `runtime sync` vehicle prefix, or the sync destination (every vehicle below it). "
            "key=value arguments are training overrides (as in `csst-edge train`), e.g. optim.lr=0.02.",
            metavar="HARVEST|KEY=VALUE",
        ),
    ],
    teacher: Annotated[
        str, typer.Option(help="Teacher checkpoint (path or URL) that pseudo-labels the harvested frames.")
    ],
    student: Annotated[
        str, typer.Option(help="Current (deployed) student checkpoint (path or URL): the gate's reference.")
    ],
    data: Annotated[
        str, typer.Option(help="Labelled dataset YAML; its train split is trained on with the pseudo labels.")
    ],
    val: Annotated[str, typer.Option(help="Fixed labelled dataset YAML the current and new student are compared on.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Round folder (frames, pseudo, centroids.npz, student/, promoted/, round.md, round.json).",
        ),
    ],
    val_split: Annotated[str, typer.Option(help="Split of --val.")] = "val",
    init: Annotated[
        str,
        typer.Option(
            help="scratch (train the new student from scratch, as CSST does) or student (continue the current one)."
        ),
    ] = "scratch",
    config: Annotated[
        Path | None, typer.Option(help="Student training config YAML (default: the current student's own config).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs of the new student.")] = None,
    previous: Annotated[
        Path | None,
        typer.Option(
            help="The last round's folder: its pseudo folders and centroid index carry over, so this round trains "
            "on at least what that one did."
        ),
    ] = None,
    sampling: Annotated[
        str, typer.Option(help="centroid (every class equally often, CSST) or random; 'config' keeps the config's.")
    ] = "centroid",
    real_fraction: Annotated[
        str, typer.Option(help="Share of real labels in every batch (0..1), 'proportional', or 'config'.")
    ] = "0.5",
    pseudo_scales: Annotated[
        str, typer.Option(help="Teacher scales for the pseudo labels, comma-separated ('1' = single scale).")
    ] = "0.75,1.0,1.25,1.5",
    previous_pseudo: Annotated[
        list[str] | None,
        typer.Option(help="Pseudo-label folders (or URLs) of earlier rounds to keep training on (repeatable)."),
    ] = None,
    index: Annotated[Path | None, typer.Option(help="Previous round's centroid index, updated incrementally.")] = None,
    duplicate_similarity: Annotated[
        float, typer.Option(help="Frames at least this similar across harvests are merged (best score kept).")
    ] = 0.95,
    flip: Annotated[bool, typer.Option(help="Flip test-time augmentation for the pseudo labels.")] = True,
    threshold: Annotated[
        float | None, typer.Option(help="Pseudo-label pixels below this teacher confidence become ignore.")
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="Pseudo-labelling engine: local, or ray (one actor per GPU; on a multi-node cluster --out must be "
            "on storage every node reads)."
        ),
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="--engine ray: join this Ray cluster ('auto'); default: start Ray here.")
    ] = None,
    gate: Annotated[
        str,
        typer.Option(
            help="miou (the 95 % bootstrap interval of ΔmIoU lies above -margin), per-class (and no class IoU "
            "falls beyond --class-margin), always."
        ),
    ] = "miou",
    margin: Annotated[
        float,
        typer.Option(
            help="Points: promote when the ΔmIoU interval's lower end is above -margin "
            "(0 = only a detectably better student; 0.5 = not detectably worse by half a point)."
        ),
    ] = 0.0,
    class_margin: Annotated[
        float, typer.Option(help="per-class gate: allowed IoU drop of any class, in points.")
    ] = 5.0,
    bootstrap_resamples: Annotated[
        int, typer.Option(help="Paired bootstrap resamples of the val images for the ΔmIoU interval.")
    ] = 1000,
    export_size: Annotated[
        str | None, typer.Option(help="HEIGHTxWIDTH of the exported model (default: the harvested frames' size).")
    ] = None,
    export_head: Annotated[
        str,
        typer.Option(
            help="What the exported graph returns (`export onnx --head`): probs (the harvester's uncertainty needs "
            "it), logits or labels."
        ),
    ] = "probs",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    workers: Annotated[int, typer.Option(help="Data-loading workers.")] = 2,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", hidden=True, help="Deprecated: give key=value as an argument.")
    ] = None,
    old_export_output: Annotated[
        str | None, typer.Option("--export-output", hidden=True, help="Deprecated: --export-head.")
    ] = None,
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
    from csst_edge.pipeline.round import RoundSettings, run_round

    harvests, overrides = split_overrides(harvests)
    if set_:
        deprecated("--set k=v", "k=v as an argument")
        overrides += list(set_)
    if not harvests:
        fail("give at least one harvest folder or URL (key=value arguments are training overrides)")
    export_head = renamed(export_head, old_export_output, "--export-head", "--export-output", default="probs")

    size = parse_hw(export_size, "--export-size") if export_size else None
    scales = _scales(pseudo_scales)
    settings = RoundSettings(
        harvests=list(harvests),
        teacher=teacher,
        student=student,
        data=data,
        val=val,
        out=out,
        val_split=val_split,
        init=init,
        config=config,
        overrides=overrides,
        epochs=epochs,
        previous=previous,
        sampling=None if sampling == "config" else sampling,
        real_fraction=_real_fraction(real_fraction),
        pseudo_scales=scales if scales != (1.0,) else (),
        previous_pseudo=list(previous_pseudo or []),
        index=index,
        duplicate_similarity=duplicate_similarity,
        pseudo_flip=flip,
        pseudo_threshold=threshold,
        pseudo_engine=engine,
        ray_address=address,
        gate=gate,
        margin=margin / 100.0,
        class_margin=class_margin / 100.0,
        bootstrap_resamples=bootstrap_resamples,
        export_size=size,
        export_output=export_head,
        device=device,
        workers=workers,
    )
    report = run_round(settings, console=None if quiet else console, progress=not quiet)
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
