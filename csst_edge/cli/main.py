"""`csst-edge` root command: registers one module per command group (DESIGN.md section 3)."""

from __future__ import annotations

from typing import Annotated

import typer

from csst_edge import __version__
from csst_edge.cli import data as data_cli
from csst_edge.cli import export as export_cli
from csst_edge.cli import runtime as runtime_cli
from csst_edge.cli.bench import bench_command
from csst_edge.cli.common import ErrorHandlingGroup, console, set_debug
from csst_edge.cli.demo import demo_command
from csst_edge.cli.eval import eval_command
from csst_edge.cli.finetune import finetune_command
from csst_edge.cli.predict import predict_command
from csst_edge.cli.pseudo import pseudo_label_command
from csst_edge.cli.round import round_command
from csst_edge.cli.train import train_command

app = typer.Typer(
    name="csst-edge",
    cls=ErrorHandlingGroup,
    help="Centroid-sampling self-training for real-time semantic segmentation: train, pseudo-label, export, "
    "benchmark, run on the vehicle, and learn from what it records.",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        console.print(f"csst-edge {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
) -> None:
    set_debug(debug)


app.command("demo")(demo_command)
app.add_typer(data_cli.app, name="data")
app.command("train", context_settings={"allow_extra_args": False})(train_command)
app.command("pseudo-label")(pseudo_label_command)
app.command("eval")(eval_command)
app.command("predict")(predict_command)
app.add_typer(export_cli.app, name="export")
app.command("bench")(bench_command)
app.command("finetune")(finetune_command)
app.add_typer(runtime_cli.app, name="runtime")
app.command("round")(round_command)


def run() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    run()
