"""`csst-edge pseudo-label`: teacher checkpoint + unlabelled images → hard (or soft) pseudo labels."""

from __future__ import annotations

from typing import Annotated

import typer

from csst_edge.cli.common import Flip, LoaderWorkers, Quiet, ShortDevice, console, fail, settings_from

_HELP = {  # help texts too long to stand on their option's line, by parameter name
    "sources": "Image folders (recursive), list files (.txt), images or videos: paths or URLs.",
    "out": "Output folder or URL (labels/, soft/, manifest.jsonl, meta.json), e.g. s3://b/pseudo.",
    "scales": "Comma-separated scales for --multiscale.",
    "threshold": "Pixels whose confidence is below become ignore (255).",
    "topk": "Also store top-k soft labels (.npz) for the 'soft' ablation; 0 = off.",
    "threads": "Torch CPU threads per process (default: all cores locally, 1 per Ray CPU actor); the same count "
    "in two runs gives the same bytes.",
    "engine": "local (this machine; torchrun shards it) or ray (Ray Data actors: one per GPU, else CPU).",
    "address": "--engine ray: join this Ray cluster ('auto', 'ray://head:10001'); default: start Ray here.",
    "actors": "--engine ray: number of actors (default: one per GPU, else one per CPU).",
}


def pseudo_label_command(
    checkpoint: Annotated[str, typer.Argument(help="Teacher checkpoint (.pt): a path or a URL (s3://, gs://).")],
    sources: Annotated[list[str], typer.Argument(help=_HELP["sources"])],
    out: Annotated[str, typer.Option("--out", "-o", help=_HELP["out"])],
    multiscale: Annotated[bool, typer.Option(help="Average predictions over --scales.")] = False,
    scales: Annotated[str, typer.Option(help=_HELP["scales"])] = "0.5,0.75,1.0,1.25,1.5,1.75",
    flip: Flip = False,
    threshold: Annotated[float | None, typer.Option(help=_HELP["threshold"])] = None,
    topk: Annotated[int, typer.Option(help=_HELP["topk"])] = 0,
    video_fps: Annotated[float, typer.Option(help="Frames per second of video time to label.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass (same-sized images are batched).")] = 1,
    workers: LoaderWorkers = 2,
    device: ShortDevice = "auto",
    threads: Annotated[int | None, typer.Option(help=_HELP["threads"])] = None,
    engine: Annotated[str, typer.Option(help=_HELP["engine"])] = "local",
    address: Annotated[str | None, typer.Option(help=_HELP["address"])] = None,
    actors: Annotated[int | None, typer.Option(help=_HELP["actors"])] = None,
    quiet: Quiet = False,
) -> None:
    """Label unlabelled images with a teacher. Reruns skip finished images.

    Examples:

      csst-edge pseudo-label runs/teacher/best.pt data/unlabelled --out pseudo/round1

      csst-edge pseudo-label teacher.pt drive.mp4 --video-fps 2 --multiscale --flip --threshold 0.9 -o pseudo/drive

      torchrun --nproc_per_node 4 -m csst_edge pseudo-label teacher.pt imgs/ -o pseudo/   # sharded over ranks

      csst-edge pseudo-label s3://b/teacher.pt s3://b/fleet/car1/harvest -o s3://b/pseudo/r01 --engine ray \
          --address auto --flip   # on a Ray cluster, bucket to bucket
    """
    from csst_edge import storage
    from csst_edge.pseudo import PseudoLabelSettings, generate_pseudo_labels

    _check_engine(engine, address, actors)
    settings = settings_from(
        PseudoLabelSettings, locals(), mode="multiscale" if multiscale else "single", scales=_scales(scales)
    )
    if engine == "ray":
        from csst_edge.pseudo.ray_engine import generate_pseudo_labels_ray

        summary = generate_pseudo_labels_ray(
            checkpoint, sources, out, settings, address=address, actors=actors, progress=not quiet, console=console
        )
    else:
        summary = generate_pseudo_labels(checkpoint, sources, out, settings, progress=not quiet, console=console)
    conf = f", mean confidence {summary.mean_confidence:.3f}" if summary.mean_confidence is not None else ""
    console.print(
        f"[green]done[/]: {summary.labelled} labelled, {summary.done_before} already done, "
        f"{summary.failed} failed (see manifest){conf} → {storage.redact(summary.out_dir)}",
        highlight=False,
    )


def _check_engine(engine: str, address: str | None, actors: int | None) -> None:
    import os

    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"'{engine}' is not an engine: local or ray", param_hint="--engine")
    if engine == "local" and (address is not None or actors is not None):
        fail("--address and --actors are options of --engine ray")
    if engine == "ray" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        fail("--engine ray runs on one driver: start it with python -m csst_edge / csst-edge, not torchrun")


def _scales(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(f"'{text}' is not a comma-separated list of numbers", param_hint="--scales") from None
