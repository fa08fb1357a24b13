"""`csst-edge data ...`: synthetic scenes, the centroid index, and class-balance statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from csst_edge.cli.common import console
from csst_edge.cli.data_synth import synth_command
from csst_edge.sizes import parse_hw

app = typer.Typer(
    help="Datasets: generate synthetic scenes, build the centroid index, show class balance.", no_args_is_help=True
)

app.command("synth")(synth_command)

SourceArg = Annotated[
    str,
    typer.Argument(
        help="Dataset YAML or built-in name (camvid, synth_cityA, ...), a pseudo-label folder, "
        "or a folder of label PNGs."
    ),
]


def _index(label_set, out: Path | None, min_area: int, workers: int, rebuild: bool, quiet: bool):
    from csst_edge.data.centroids import build_or_update_index

    index, info = build_or_update_index(
        label_set.files,
        label_set.num_classes,
        label_set.ignore_index,
        min_area,
        luts=label_set.luts,
        previous=None if rebuild else out,
        workers=workers,
        progress=not quiet,
        console=console,
    )
    if "rebuilt" in info:
        console.print(f"[yellow]{out}: built with other settings ({info['rebuilt']}); read every label map again")
    return index, info


@app.command("index")
def index_command(
    source: SourceArg,
    split: Annotated[str, typer.Option(help="Split of a dataset YAML.")] = "train",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Index file (.npz). Updated in place if it exists.")
    ] = None,
    min_area: Annotated[int, typer.Option(help="Components smaller than this many pixels get no centroid.")] = 1,
    workers: Annotated[int, typer.Option(help="Processes reading label maps.")] = 2,
    rebuild: Annotated[bool, typer.Option(help="Ignore an existing index file and read every label map.")] = False,
    num_classes: Annotated[int | None, typer.Option(help="Class count for a plain folder of label PNGs.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Build (or incrementally update) the centroid index: one point per connected component of every class.

    Examples:

      csst-edge data index camvid --split train -o runs/index/camvid_train.npz

      csst-edge data index pseudo/round1 -o pseudo/round1/centroids.npz   # after adding labels: reads only new files
    """
    from rich.table import Table

    from csst_edge.data.label_source import resolve_label_set

    label_set = resolve_label_set(source, split, num_classes)
    out = out or Path("runs") / "index" / f"{label_set.name}.npz"
    index, info = _index(label_set, out, min_area, workers, rebuild, quiet)
    index.save(out)
    comps = index.components_per_class()
    table = Table(
        title=f"centroid index: {len(index)} centroids in {index.num_images} label maps", title_justify="left"
    )
    table.add_column("class")
    table.add_column("centroids", justify="right")
    table.add_column("median area (px)", justify="right")
    for c, name in enumerate(label_set.class_names):
        areas = index.area[index.cls == c]
        table.add_row(
            name, str(int(comps[c])) if comps[c] else "[red]0[/]", f"{np.median(areas):.0f}" if areas.size else "-"
        )
    console.print(table)
    missing = [label_set.class_names[c] for c in range(index.num_classes) if comps[c] == 0]
    if missing:
        console.print(f"[yellow]no centroids for: {', '.join(missing)} (centroid sampling will skip them)")
    console.print(f"read {info['read']} label maps, reused {info['reused']}, dropped {info['dropped']} → {out}")


@app.command("stats")
def stats_command(
    source: SourceArg,
    split: Annotated[str, typer.Option(help="Split of a dataset YAML.")] = "train",
    index_path: Annotated[Path | None, typer.Option("--index", help="Use (and update) this index file.")] = None,
    crop: Annotated[str, typer.Option(help="Training crop HEIGHTxWIDTH to simulate.")] = "288x384",
    samples: Annotated[int, typer.Option(help="Crops in the simulated epoch.")] = 1000,
    min_area: Annotated[int, typer.Option(help="Minimum component area for a centroid.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the simulated epoch.")] = 0,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG bar chart of the class shares here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the table as JSON here.")] = None,
    workers: Annotated[int, typer.Option(help="Processes reading label maps.")] = 2,
    num_classes: Annotated[int | None, typer.Option(help="Class count for a plain folder of label PNGs.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Class balance: pixel share and component count per class, and the crops of one epoch, random vs centroid.

    The crop columns simulate one epoch of training crops (no scaling) with plain random crops and with centroid
    sampling: the share of crop pixels of each class, and the share of crops that contain the class at all.

    Examples:

      csst-edge data stats camvid --crop 288x384 --plot camvid_balance.png

      csst-edge data stats pseudo/round1 --index pseudo/round1/centroids.npz --json balance.json
    """
    from csst_edge.data.label_source import resolve_label_set
    from csst_edge.data.stats import balance_plot, balance_table, class_balance_rows
    from csst_edge.fileio import atomic_write_text

    label_set = resolve_label_set(source, split, num_classes)
    index, _ = _index(label_set, index_path, min_area, workers, False, quiet)
    if index_path is not None:
        index.save(index_path)
    rows = class_balance_rows(
        index, label_set.class_names, parse_hw(crop, "--crop"), samples, seed, luts=label_set.luts
    )
    title = f"{label_set.name}: {index.num_images} label maps, epoch of {samples} crops {crop}"
    console.print(balance_table(rows, title))
    if plot:
        balance_plot(rows, plot, title)
        console.print(f"plot → {plot}")
    if json_out:
        atomic_write_text(
            json_out, json.dumps({"source": source, "crop": crop, "samples": samples, "rows": rows}, indent=2)
        )
        console.print(f"json → {json_out}")
