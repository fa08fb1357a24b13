"""`csst-edge data ...`: synthetic scenes, the centroid index, and class-balance statistics."""

from __future__ import annotations

import typer

app = typer.Typer(help="Datasets: generate synthetic scenes, build the centroid index, show class balance.",
                  no_args_is_help=True)
