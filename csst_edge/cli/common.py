"""Shared CLI plumbing: the root group that turns known errors into one red line, and console helpers."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from csst_edge.errors import CsstError

console = Console()
err_console = Console(stderr=True)

_state = {"debug": False}


def set_debug(value: bool) -> None:
    _state["debug"] = value


class ErrorHandlingGroup(TyperGroup):
    """Root group: a `CsstError` anywhere below becomes `error: <message>` in red and exit code 1.

    Catching here (rather than in `run()`) means `typer.testing.CliRunner` sees the same behaviour as a user.
    With `--debug` the original traceback is shown instead.
    """

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except CsstError as e:
            if _state["debug"] or "--debug" in sys.argv:
                raise
            # escaped: messages hold literal brackets (pip install "csst-edge[mlflow]") that are not markup
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None


def fail(message: str) -> NoReturn:
    """Raise a known error from a command (for checks that belong to the CLI layer, e.g. option combinations)."""
    raise CsstError(message)


def deprecated(old: str, new: str) -> None:
    """One yellow line on stderr: an old option spelling still works for one release."""
    err_console.print(f"[yellow]warning:[/] {old} is deprecated; use {new}", highlight=False, soft_wrap=True)


def renamed(new_value, old_value, new: str, old: str, default=None):
    """The value of a renamed option: the old spelling's (with a deprecation line) when it was given, else the new
    one's. Both given with different values is an error naming both."""
    if old_value is None:
        return new_value
    deprecated(old, new)
    if new_value is not None and new_value != default and new_value != old_value:
        fail(f"{old} is the old spelling of {new}: give only {new}")
    return old_value


def command_group(help: str) -> typer.Typer:
    """A sub-command group that reports known errors the same way as the root (usable on its own in tests)."""
    return typer.Typer(
        cls=ErrorHandlingGroup,
        help=help,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
    )


SettingsT = TypeVar("SettingsT")


def settings_from(cls: type[SettingsT], params: Mapping[str, Any], **explicit: Any) -> SettingsT:
    """A `cls` dataclass from a command's parameters (`locals()`): every parameter named like a field, then
    `explicit` on top (conversions and renamed fields: what a reader must see). Other parameters are ignored, and
    fields given neither way keep their defaults, so a command lists only what is not a plain copy."""
    names = {field.name for field in dataclasses.fields(cls) if field.init}
    picked = {name: value for name, value in params.items() if name in names}
    return cls(**{**picked, **explicit})


def out_option(help: str) -> Any:
    """`--out` / `-o`, the output option of every command that writes files (one spelling everywhere)."""
    return typer.Option("--out", "-o", help=help)


# options that several commands share, with the same meaning and help text
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
QuietBars = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")]
ShortDevice = Annotated[str, typer.Option(help="auto, cpu, cuda ...")]
LoaderWorkers = Annotated[int, typer.Option(help="DataLoader decoding workers.")]
DataWorkers = Annotated[int, typer.Option(help="Data-loading workers.")]
Flip = Annotated[bool, typer.Option(help="Also average with the horizontally flipped prediction.")]
Fit = Annotated[str, typer.Option(help="resize (stretch to the model size) or letterbox (keep the aspect ratio, pad).")]
MaxFrames = Annotated[int | None, typer.Option(help="Stop after this many frames.")]
EvalLimit = Annotated[int | None, typer.Option(help="Evaluate on the first N images only.")]
OldBatch = Annotated[int | None, typer.Option("--batch", hidden=True, help="Deprecated: --batch-size.")]
