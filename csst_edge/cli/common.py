"""Shared CLI plumbing: the root group that turns known errors into one red line, and console helpers."""

from __future__ import annotations

import sys

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


def fail(message: str) -> typer.Exit:
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
