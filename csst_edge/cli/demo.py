"""`csst-edge demo`: the whole self-training loop on built-in synthetic data, no arguments needed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csst_edge.cli.common import console


def demo_command(
    out: Annotated[Path, typer.Option(help="Output folder (data, runs, report). Reruns continue from it.")] = Path(
        "runs/demo"
    ),
    scale: Annotated[float, typer.Option(help="Longer, better run: multiplies data and epochs (e.g. 3).")] = 1.0,
    teacher: Annotated[
        str | None,
        typer.Option(help="Teacher model [default: icnet_r18, the strongest teacher a CPU trains in the demo's time]."),
    ] = None,
    student: Annotated[str | None, typer.Option(help="Student model [default: fastscnn].")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    workers: Annotated[int, typer.Option(help="Data-loading workers.")] = 2,
    vehicle_loop: Annotated[
        bool,
        typer.Option(help="Continue into export, the runtime on the dashcam video with harvesting, and one round."),
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run CSST end to end on synthetic two-city street scenes and print the comparison table.

    Examples:

      csst-edge demo                       # ~10 minutes on 2 CPU cores

      csst-edge demo --scale 3 --out runs/demo_long --device cuda
    """
    from csst_edge.pipeline.demo import DemoSettings, run_demo

    defaults = DemoSettings()
    settings = DemoSettings(
        out=out,
        teacher=teacher or defaults.teacher,
        student=student or defaults.student,
        device=device,
        workers=workers,
        vehicle_loop=vehicle_loop,
    )
    if scale != 1.0:
        settings = settings.scaled(scale)
    run_demo(settings, console, progress=not quiet)
