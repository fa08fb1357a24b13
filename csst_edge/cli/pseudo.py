"""`csst-edge pseudo-label`: teacher checkpoint + unlabelled images → hard (or soft) pseudo labels."""

from __future__ import annotations

from typing import Annotated

import typer

from csst_edge.cli.common import console, fail


def pseudo_label_command(
    checkpoint: Annotated[str, typer.Argument(help="Teacher checkpoint (.pt): a path or a URL (s3://, gs://).")],
    sources: Annotated[
        list[str],
        typer.Argument(help="Image folders (recursive), list files (.txt), images or videos: paths or URLs."),
    ],
    out: Annotated[
        str,
        typer.Option(
            "--out", "-o", help="Output folder or URL (labels/, soft/, manifest.jsonl, meta.json), e.g. s3://b/pseudo."
        ),
    ],
    multiscale: Annotated[bool, typer.Option(help="Average predictions over --scales.")] = False,
    scales: Annotated[
        str, typer.Option(help="Comma-separated scales for --multiscale.")
    ] = "0.5,0.75,1.0,1.25,1.5,1.75",
    flip: Annotated[bool, typer.Option(help="Also average with the horizontally flipped prediction.")] = False,
    threshold: Annotated[
        float | None, typer.Option(help="Pixels whose confidence is below become ignore (255).")
    ] = None,
    topk: Annotated[
        int, typer.Option(help="Also store top-k soft labels (.npz) for the 'soft' ablation; 0 = off.")
    ] = 0,
    video_fps: Annotated[float, typer.Option(help="Frames per second of video time to label.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass (same-sized images are batched).")] = 1,
    workers: Annotated[int, typer.Option(help="DataLoader decoding workers.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    threads: Annotated[
        int | None,
        typer.Option(
            help="Torch CPU threads per process (default: all cores locally, 1 per Ray CPU actor); the same count "
            "in two runs gives the same bytes."
        ),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(help="local (this machine; torchrun shards it) or ray (Ray Data actors: one per GPU, else CPU)."),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(help="--engine ray: join this Ray cluster ('auto', 'ray://head:10001'); default: start Ray here."),
    ] = None,
    actors: Annotated[
        int | None, typer.Option(help="--engine ray: number of actors (default: one per GPU, else one per CPU).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Label unlabelled images with a teacher. Reruns skip finished images.

    Examples:

      csst-edge pseudo-label runs/teacher/best.pt data/unlabelled --out pseudo/round1

      csst-edge pseudo-label teacher.pt drive.mp4 --video-fps 2 --multiscale --flip --threshold 0.9 -o pseudo/drive

      torchrun --nproc_per_node 4 -m csst_edge pseudo-label teacher.pt imgs/ -o pseudo/   # sharded over ranks

      csst-edge pseudo-label s3://b/teacher.pt s3://b/fleet/car1/harvest -o s3://b/pseudo/r01 --engine ray \
          --address auto --flip   # on a Ray cluster, bucket to bucket
    """
    import os

    from csst_edge import storage
    from csst_edge.pseudo import PseudoLabelSettings, generate_pseudo_labels

    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"'{engine}' is not an engine: local or ray", param_hint="--engine")
    if engine == "local" and (address is not None or actors is not None):
        fail("--address and --actors are options of --engine ray")
    if engine == "ray" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        fail("--engine ray runs on one driver: start it with python -m csst_edge / csst-edge, not torchrun")

    try:
        scale_list = tuple(float(s) for s in scales.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(
            f"'{scales}' is not a comma-separated list of numbers", param_hint="--scales"
        ) from None
    settings = PseudoLabelSettings(
        mode="multiscale" if multiscale else "single",
        scales=scale_list,
        flip=flip,
        threshold=threshold,
        topk=topk,
        video_fps=video_fps,
        batch_size=batch_size,
        workers=workers,
        device=device,
        threads=threads,
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
