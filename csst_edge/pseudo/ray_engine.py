"""`pseudo-label --engine ray`: the local engine's outputs, streamed through Ray Data actors.

    summary = generate_pseudo_labels_ray("s3://bucket/teacher.pt", ["s3://bucket/fleet"], "s3://bucket/pseudo/r01",
                                         PseudoLabelSettings(flip=True), address="auto")

The driver expands the sources and drops the items already in the manifest (resume), exactly as the local engine
does, and turns the rest into a `ray.data.from_items` dataset. `map_batches` runs `Labeller`, a callable class
that holds the teacher: one actor per GPU where the cluster has GPUs (`num_gpus=1` each), else one single-threaded
CPU actor per CPU (`PseudoLabelSettings.threads` threads and CPUs per actor). An actor decodes, labels and writes
its items with the local engine's own functions (`decode_item`, `predict_probs`, `write_item_outputs`), so the
label files are byte for byte the local engine's at the same torch thread count (`threads`: CPU kernels may round
the last bit differently with another count, which can flip a pixel whose top two classes tie), and returns their
manifest records. The driver streams the results (`iter_batches`) and appends every record as it arrives; a file
is always complete before its manifest line, so a kill loses only unfinished items, and a rerun skips the rest.
A corrupt item comes back as an error record, as in the local engine.

The teacher checkpoint is read once by the driver (a path or a URL) and shipped to the actors through Ray's
object store, so a cluster's workers need no access to the driver's disk. Inputs and outputs that the workers
read and write must be reachable from them: URLs (s3://, gs://) on a cluster, or any path on one machine.
`address` joins a running cluster (`ray start --head`, "auto", "ray://host:10001"); without it Ray starts on this
machine with `num_cpus` CPUs (default: all). Ray is the `ray` extra.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from csst_edge import storage
from csst_edge.errors import ConfigError, CsstError
from csst_edge.progress import progress_bar
from csst_edge.pseudo.generate import (
    PseudoLabelSettings,
    PseudoLabelSummary,
    _same_shape_groups,
    decode_item,
    error_record,
    lock_output,
    predict_probs,
    prepare_run,
    write_item_outputs,
    write_meta,
)

RAY_HINT = 'pip install "csst-edge[ray]"'
ROWS_PER_BLOCK = 8  # x batch size: how often results stream back to the driver (and what a kill can lose)
MAX_BLOCKS = 10_000


def import_ray():
    """Ray with Ray Data, or a ConfigError naming the extra that installs it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError(f"--engine ray needs Ray Data, which is not installed: {RAY_HINT}") from None
    return ray


class Labeller:
    """The Ray Data callable class: loads the teacher once per actor, then labels batches of item rows and returns
    their manifest records (JSON strings)."""

    def __init__(self, checkpoint, where: str, out_dir: str, shown_out: str, settings, teacher_hash: str, gpu: bool):
        import ray
        import torch

        from csst_edge.models.checkpoint import load_checkpoint_bytes, model_from_checkpoint, normalization

        data = ray.get(checkpoint[0])  # an ObjectRef in a list: Ray resolves only top-level refs itself
        state = load_checkpoint_bytes(data, where)
        self.device = torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")
        torch.set_num_threads(settings.threads or (torch.get_num_threads() if gpu else 1))
        self.model, _ = model_from_checkpoint(state)
        self.model.to(self.device).eval()
        self.mean, self.std = normalization(state)
        self.num_classes = int(state["num_classes"])
        self.out_dir, self.shown_out = storage.as_location(out_dir), shown_out
        self.settings, self.teacher_hash = settings, teacher_hash

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from csst_edge.data.unlabelled import UnlabelledItem

        settings = self.settings
        records, good, where = [], [], {}
        for k, (name, path, frame) in enumerate(zip(batch["name"], batch["path"], batch["frame"], strict=True)):
            item = UnlabelledItem(str(name), storage.as_location(str(path)), None if int(frame) < 0 else int(frame))
            where[k] = (item, str(batch["shown"][k]))
            try:
                good.append((k, decode_item(item, self.mean, self.std)))
            except CsstError as e:  # corrupt / unreadable inputs are reported in the manifest, not fatal
                message = str(e).replace(str(item.path), where[k][1])  # the path as given, as the local engine's
                records.append(error_record(UnlabelledItem(item.name, where[k][1], item.frame), message))
        for group in _same_shape_groups(good):
            x = torch.stack([tensor for _, (tensor, _) in group])
            probs = predict_probs(self.model, x, settings, self.num_classes, self.device)
            for (k, (_, raw)), p in zip(group, probs, strict=True):
                item, shown = where[k]
                record = write_item_outputs(self.out_dir, item, p, raw, settings, self.num_classes, self.teacher_hash)
                # the manifest names inputs as the user gave them (the local engine's records), not as shipped
                record["image"] = storage.redact(
                    shown if item.frame is None else storage.join(self.shown_out, "frames", f"{item.name}.jpg")
                )
                records.append(record)
        return {"record": np.array([json.dumps(r) for r in records], dtype=object)}


def generate_pseudo_labels_ray(
    checkpoint,
    sources: list,
    out_dir,
    settings: PseudoLabelSettings | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    actors: int | None = None,
    progress: bool = True,
    console=None,
) -> PseudoLabelSummary:
    """Label `sources` into `out_dir` on Ray (see the module docstring); returns the local engine's summary."""
    ray = import_ray()
    settings = settings or PseudoLabelSettings()
    settings.check()
    if settings.device not in ("auto", "cpu") and not settings.device.startswith("cuda"):
        raise ConfigError(f"--device for --engine ray must be auto, cpu or cuda, got {settings.device!r}")
    if actors is not None and actors < 1:
        raise ConfigError(f"--actors must be >= 1, got {actors}")
    out_lock = lock_output(out_dir)  # one writer per --out, as in the local engine
    try:
        return _generate_ray_locked(
            ray, checkpoint, sources, out_dir, settings, address, num_cpus, actors, progress, console
        )
    finally:
        out_lock.release()


def _generate_ray_locked(ray, checkpoint, sources, out_dir, settings, address, num_cpus, actors, progress, console):
    run = prepare_run(checkpoint, sources, out_dir, settings, keep_bytes=True)
    todo = [it for it in run.items if it.name not in run.done]
    write_meta(run, checkpoint, sources, settings)
    manifest = storage.ManifestWriter(run.out_dir)
    counts = {"ok": 0, "error": 0, "conf": 0.0}
    if not todo:
        manifest.close()
        return PseudoLabelSummary(run.out_dir, len(run.items), len(run.done), 0, 0, None)

    started = not ray.is_initialized()
    if started:
        _start_ray(ray, address, num_cpus)
    bar = None
    data_log = logging.getLogger("ray.data")
    data_level = data_log.level
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours shows img/s; Ray's would interleave with it
    data_log.setLevel(logging.ERROR)  # Ray Data's per-run INFO lines and the "progress bars disabled" notice
    try:
        gpu, n_actors, remote_args = _actor_plan(ray, settings.device, actors, len(todo), settings.threads or 1)
        batch_size = max(1, settings.batch_size)
        rows = [_row(it) for it in todo]
        # enough blocks to keep every actor fed, small enough that results stream back as they are done
        blocks = min(len(rows), MAX_BLOCKS, max(4 * n_actors, math.ceil(len(rows) / (ROWS_PER_BLOCK * batch_size))))
        checkpoint_ref = ray.put(run.checkpoint_bytes)
        run.checkpoint_bytes = None
        dataset = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            Labeller,
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            fn_constructor_kwargs={
                "checkpoint": [checkpoint_ref],
                "where": storage.redact(checkpoint),
                "out_dir": str(_absolute(run.out_dir)),
                "shown_out": str(run.out_dir),
                "settings": settings,
                "teacher_hash": run.teacher_hash,
                "gpu": gpu,
            },
            **remote_args,
        )
        if progress:
            bar = progress_bar("img", console)
            bar.start()
            task = bar.add_task(f"pseudo-label (ray, {n_actors} {'GPU' if gpu else 'CPU'} actors)", total=len(todo))
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for line in batch["record"]:
                record = json.loads(line)
                manifest.append(record)
                if record["status"] == "ok":
                    counts["ok"] += 1
                    counts["conf"] += record["mean_confidence"]
                else:
                    counts["error"] += 1
            if bar:
                bar.update(task, advance=len(batch["record"]))
    finally:
        manifest.close()
        data_log.setLevel(data_level)
        if bar:
            bar.stop()
        if started:
            ray.shutdown()
    labelled = counts["ok"]
    return PseudoLabelSummary(
        run.out_dir,
        len(run.items),
        len(run.done),
        labelled,
        counts["error"],
        counts["conf"] / labelled if labelled else None,
    )


def _start_ray(ray, address: str | None, num_cpus: int | None) -> None:
    quiet = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {storage.redact(address)}" if address else "a local Ray"
        raise ConfigError(f"cannot start {where}: {storage.redact_text(str(e).splitlines()[0][:200])}") from None


def _actor_plan(ray, device: str, actors: int | None, items: int, threads: int = 1) -> tuple[bool, int, dict]:
    """(use GPUs, number of actors, resources per actor): one actor per GPU of the cluster, else one per `threads`
    CPUs."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if device != "cpu" else 0
    if device.startswith("cuda") and not gpus:
        raise ConfigError("--device cuda with --engine ray, but the Ray cluster has no GPUs")
    if gpus:
        return True, max(1, min(actors or gpus, items)), {"num_gpus": 1}
    fit = max(1, int(resources.get("CPU", 1)) // threads)
    return False, max(1, min(actors or fit, items)), {"num_cpus": threads}


def _row(item) -> dict:
    """An item as a dataset row: the location the workers read (absolute: their working directory is not the
    driver's) and the one the manifest shows (as the user gave it)."""
    return {
        "name": item.name,
        "path": str(_absolute(item.path)),
        "shown": str(item.path),
        "frame": -1 if item.frame is None else int(item.frame),
    }


def _absolute(location) -> Path | str:
    location = storage.as_location(location)
    return location.resolve() if isinstance(location, Path) else location
