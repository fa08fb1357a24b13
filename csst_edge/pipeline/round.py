"""`csst-edge round`: the next self-training round from frames the fleet harvested.

    result = run_round(RoundSettings(harvests=[Path("car1"), Path("car2")], teacher=Path("teacher.pt"),
                                     student=Path("student.pt"), data="cityA.yaml", val="cityB.yaml",
                                     out=Path("rounds/r01")))

Stages, each cached in the round folder so a rerun continues where it stopped:

1. **merge**: the frames currently in every harvest folder (manifest minus evictions), near-duplicates across
   vehicles removed (the harvester's thumbnail descriptor; the higher-scoring copy is kept), hard-linked (or
   copied) to `frames/<harvest>/<name>.jpg`. A harvest may be a URL: a harvest folder in a bucket
   (`runtime run --harvest s3://...`), a vehicle prefix `runtime sync` wrote (`<dest>/<vehicle>/`), or the sync
   destination itself (`<dest>`: every vehicle below it); its frames are fetched into the local cache first.
   The teacher and the current student may be URLs too (fetched into the cache); the round folder is local.
2. **pseudo-label** them with the teacher (`pseudo/`, the usual pseudo-label folder).
3. **centroid index** of the labelled train split + all pseudo labels, updated incrementally from the previous
   round's index (`centroids.npz`; also the `--class-stats` of the next runtime deployment).
4. **train** the next student on real + pseudo labels, from scratch (CSST) or from the current student.
   No val set is given to training: the gate's val set must not pick the checkpoint it then judges.
5. **evaluate** the current and the new student on the same fixed labelled val set, keeping every image's
   confusion matrix, and a **paired bootstrap** over the val images (`evaluate.bootstrap`) gives a 95 % interval
   for ΔmIoU and each class's ΔIoU.
6. **gate**: promote only a change the val set can see (`miou`: the interval's lower end is above -margin, so with
   margin 0 only a detectably better student; `per-class`: and no class IoU falls by more than `class_margin`;
   `always`: bootstrap rounds). The interval in words: better (above 0), worse (below 0), no detectable change.
7. **export** a promoted student to ONNX (`promoted/student.pt`, `promoted/student.onnx`).
8. **report**: `round.json` + `round.md` (data added, per-class IoU before/after, decision).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from csst_edge import storage
from csst_edge.data.pseudo_folder import manifest_files, read_pseudo_manifest
from csst_edge.errors import ConfigError, CsstError
from csst_edge.evaluate.bootstrap import BootstrapResult, paired_bootstrap
from csst_edge.evaluate.bootstrap import verdict as in_words
from csst_edge.fileio import atomic_write_json
from csst_edge.runtime.harvest import frame_descriptor, harvest_layout, read_harvest_records

GATES = ("miou", "per-class", "always")
INITS = ("scratch", "student")


class RoundError(CsstError):
    """A round input is missing or inconsistent; the message names the file or option."""


@dataclass
class RoundSettings:
    harvests: list[Path | str]  # harvest folders or URLs (see the module docstring)
    teacher: Path | str
    student: Path | str  # the current (deployed) student checkpoint
    data: str  # labelled dataset YAML (its train split is trained on)
    val: str  # the fixed labelled val set the gate compares on
    out: Path
    val_split: str = "val"
    # student: continue the current student (camvid-newdrive: +6.1 / +6.2, edge +5.4, against +4.2 / +2.3 / +2.9
    # from scratch); scratch: a new student, the paper's CSST recipe (its backbone keeps its ImageNet weights)
    init: str = "student"
    config: Path | None = None  # training config YAML for the student (default: the current student's own config)
    overrides: list[str] = field(default_factory=list)  # key=value on top of the config
    epochs: int | None = None
    # the CSST recipe on top of the current student's config (measured on camvid-newdrive, benchmarks/README.md):
    # centroid sampling, half real / half pseudo in every batch; None keeps the config's own value
    sampling: str | None = "centroid"
    real_fraction: float | str | None = 0.5  # or "proportional" (by set sizes)
    # the last round's folder: its pseudo folders (its own and those it kept) and its centroid index carry over,
    # so round N+1 never trains on less than round N did
    previous: Path | None = None
    previous_pseudo: list[Path | str] = field(default_factory=list)  # earlier rounds' pseudo folders (or URLs)
    index: Path | None = None  # the previous round's centroid index, updated incrementally
    duplicate_similarity: float = 0.95
    # teacher test-time augmentation for the pseudo labels: these scales + flip (the paper's labels; () = one scale)
    pseudo_scales: tuple[float, ...] = (0.75, 1.0, 1.25, 1.5)
    pseudo_flip: bool = True
    pseudo_threshold: float | None = None
    pseudo_engine: str = "local"  # local | ray (Ray Data actors; the round folder must be readable by the workers)
    ray_address: str | None = None  # with pseudo_engine ray: join this cluster, else start Ray here
    gate: str = "miou"
    margin: float = 0.0  # the interval's lower end must be above -margin (fraction: 0.005 = half a point)
    class_margin: float = 0.05  # per-class gate: allowed IoU drop of any class
    bootstrap_resamples: int = 1000  # paired bootstrap over val images for the ΔmIoU interval
    bootstrap_seed: int = 0
    export_size: tuple[int, int] | None = None  # default: the harvested frames' size
    export_output: str = "probs"  # the runtime's harvester wants probabilities
    device: str = "auto"
    workers: int = 2

    def check(self) -> None:
        if self.gate not in GATES:
            raise ConfigError(f"--gate must be one of {', '.join(GATES)}, got {self.gate!r}")
        if self.bootstrap_resamples < 1:
            raise ConfigError(f"--bootstrap-resamples must be >= 1, got {self.bootstrap_resamples}")
        if self.init not in INITS:
            raise ConfigError(f"--init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.pseudo_engine not in ("local", "ray"):
            raise ConfigError(f"--engine must be local or ray, got {self.pseudo_engine!r}")
        if not self.harvests:
            raise ConfigError("give at least one harvest folder")
        if self.sampling not in (None, "centroid", "random"):
            raise ConfigError(f"--sampling must be centroid or random, got {self.sampling!r}")
        if self.real_fraction not in (None, "proportional") and not 0.0 <= float(self.real_fraction) <= 1.0:
            raise ConfigError(f"--real-fraction must be in [0, 1] or 'proportional', got {self.real_fraction}")
        if self.previous is not None:
            self.previous_pseudo, self.index = carried_over(self.previous, self.previous_pseudo, self.index)
        self.harvests = expand_harvest_sources(self.harvests)
        for name, path in (("--teacher", self.teacher), ("--student", self.student)):
            if not storage.isfile(path):
                raise RoundError(f"{storage.redact(path)}: {name} checkpoint not found")


@dataclass
class GateDecision:
    promote: bool
    reason: str
    delta_miou: float
    regressed_classes: list[str]
    low: float | None = None  # the ΔmIoU interval the decision used
    high: float | None = None
    verdict: str = ""  # better | worse | no detectable change


def gate_decision(
    before: dict,
    after: dict,
    class_names: list[str],
    gate: str = "miou",
    margin: float = 0.0,
    class_margin: float = 0.05,
    interval: BootstrapResult | None = None,
) -> GateDecision:
    """Promote `after` over `before` (metrics dicts: miou, per_class_iou) only when the lower end of the ΔmIoU
    interval is above -margin (and, for `per-class`, no class IoU falls by more than `class_margin`).

    `interval`: the paired bootstrap of the two students on the val images (`paired_bootstrap`); without it the
    interval is the point estimate itself (no error bars: promote when ΔmIoU > -margin). Classes absent from the
    val set (IoU None) are not compared."""
    if gate not in GATES:
        raise ConfigError(f"--gate must be one of {', '.join(GATES)}, got {gate!r}")
    delta = float(after["miou"]) - float(before["miou"])
    regressed = [
        name
        for name, b, a in zip(class_names, before["per_class_iou"], after["per_class_iou"], strict=False)
        if a is not None and b is not None and a < b - class_margin
    ]
    if interval is not None and interval.low is not None and interval.high is not None:
        low, high = interval.low, interval.high
        words = interval.verdict
        shown = (
            f"ΔmIoU {100 * delta:+.2f} points, {100 * interval.confidence:.0f} % interval "
            f"[{100 * low:+.2f}, {100 * high:+.2f}] over {interval.images} val images: {words}"
        )
    else:
        low = high = delta
        words = in_words(low, high)
        shown = f"ΔmIoU {100 * delta:+.2f} points (no interval): {words}"
    floor = "0" if margin == 0 else f"-{100 * margin:.2f}"

    def decide(promote: bool, reason: str) -> GateDecision:
        return GateDecision(promote, reason, delta, regressed, low, high, words)

    if gate == "always":
        return decide(True, f"gate 'always': promoted without comparison ({shown})")
    if not low > -margin:
        return decide(False, f"{shown}; promotion needs the lower end above {floor}")
    if gate == "per-class" and regressed:
        return decide(
            False, f"{shown}, but class IoU fell by more than {100 * class_margin:.1f} points: " + ", ".join(regressed)
        )
    return decide(True, f"{shown}; the lower end is above {floor}")


def carried_over(previous: Path, pseudo: list, index: Path | None) -> tuple[list, Path | None]:
    """What a round keeps from the last one (`--previous rounds/r01`): its pseudo folder and every pseudo folder it
    trained on, then `pseudo` (given by hand; no folder twice), and its centroid index unless `index` is given."""
    previous = Path(previous)
    report = previous / "round.json"
    if not report.is_file():
        raise RoundError(f"{previous}: --previous is not a finished round folder (no round.json)")
    import json

    try:
        earlier = json.loads(report.read_text())
    except (OSError, ValueError) as e:
        raise RoundError(f"{report}: unreadable round report ({e})") from None
    kept = [str(p) for p in earlier.get("pseudo_folders") or []] or [str(previous / "pseudo")]
    folders: list = []
    for folder in [*kept, *pseudo]:
        if str(folder) not in map(str, folders):
            folders.append(folder)
    if index is None and (previous / "centroids.npz").is_file():
        index = previous / "centroids.npz"
    return folders, index


def expand_harvest_sources(sources: list) -> list[Path | str]:
    """Harvest folders / synced vehicle prefixes as given, and a folder of them (a sync destination) as its
    children; anything else is a RoundError naming it."""
    out = []
    for source in sources:
        source = storage.as_location(source)
        if harvest_layout(source):
            out.append(source)
            continue
        children = _child_folders(source)
        found = [c for c in children if harvest_layout(c)]
        if not found:
            raise RoundError(
                f"{storage.redact(source)}: not a harvest folder (no manifest.jsonl; made by `runtime run "
                "--harvest`), a vehicle prefix of `runtime sync` (manifest/) or a folder of them"
            )
        out += found
    return out


def _child_folders(source) -> list[Path | str]:
    if isinstance(source, Path):
        return sorted(p for p in source.iterdir() if p.is_dir()) if source.is_dir() else []
    children = {storage.relative_to(f, source).split("/", 1)[0] for f in storage.find(source)}
    return [storage.join(source, c) for c in sorted(children) if c and not c.startswith(".")]


def _harvest_tag(k: int, folder) -> str:
    return f"{k:02d}_{storage.name_of(folder)}"


# ------------------------------------------------------------------------------------------------ stages
def merge_harvests(harvests: list, out: Path, duplicate_similarity: float = 0.95) -> dict:
    """Frames of every harvest folder (paths or URLs) into `out/<folder tag>/`, near-duplicates across folders
    removed (best score kept). Returns counts per folder and the kept records.

    What a vehicle wrote is data, never a path to follow: rows whose image is not the harvester's `images/<name>`
    (or sync's `images/<sha256>.jpg`) are skipped (`skipped`, with a warning line), and every frame is checked
    against the pixel limit from its header before it is decoded (`unreadable` otherwise)."""
    from collections import Counter

    from csst_edge.fileio import check_image_pixels, warn

    candidates = []
    skipped: dict[str, int] = {}
    for k, folder in enumerate(harvests):
        folder = storage.as_location(folder)
        tag = _harvest_tag(k, folder)
        counted: Counter = Counter()
        records = read_harvest_records(folder, counted)
        skipped[storage.redact(folder)] = sum(counted.values())
        # remote frames are fetched once into the local cache (content-named, so a cached copy stands)
        sources = storage.cache_files([storage.join(folder, r["image"]) for r in records])
        for record, source in zip(records, sources, strict=True):
            candidates.append((float(record.get("score", 0.0)), tag, folder, record, source))
    candidates.sort(key=lambda c: -c[0])  # best first: a duplicate loses to the copy that scored higher
    kept, descriptors, seen = [], [], set()
    per_folder = {
        storage.redact(storage.as_location(f)): {"frames": 0, "kept": 0, "duplicates": 0, "unreadable": 0}
        for f in harvests
    }
    for where, n in skipped.items():
        per_folder[where]["skipped"] = n
    for score, tag, folder, record, source in candidates:
        stats = per_folder[storage.redact(folder)]
        stats["frames"] += 1
        grey = None
        try:
            data = Path(source).read_bytes()
            check_image_pixels(data, f"{storage.redact(folder)}/{record['image']}")
            grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_2)
        except (OSError, ValueError) as e:
            warn(str(e) if isinstance(e, ValueError) else f"{source}: cannot read ({e.strerror})")
        if grey is None:
            stats["unreadable"] += 1
            continue
        d = frame_descriptor(grey)
        key = record["name"]
        if key in seen or any(float(d @ other) >= duplicate_similarity for other in descriptors):
            stats["duplicates"] += 1
            continue
        seen.add(key)
        descriptors.append(d)
        target = out / tag / Path(record["image"]).name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            try:
                os.link(source, tmp)  # same filesystem: no copy
            except OSError:
                shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        stats["kept"] += 1
        kept.append(
            {
                "image": str(target),
                "harvest": storage.redact(folder),
                "score": score,
                "vehicle": record.get("vehicle"),
                "model_sha256": record.get("model_sha256"),
            }
        )
    # a rerun with fewer frames (evicted since) must not train on the stale ones
    wanted = {k["image"] for k in kept}
    for stale in out.rglob("*.jpg"):
        if str(stale) not in wanted:
            stale.unlink()
    return {"per_harvest": per_folder, "kept": len(kept), "frames": kept}


def _pseudo_composition(pseudo_dir: Path, class_names: list[str]) -> dict:
    records = [r for f in manifest_files(pseudo_dir) for r in storage.read_jsonl(f) if r.get("status") == "ok"]
    hist = np.zeros(len(class_names), np.int64)
    conf = []
    for r in records:
        hist += np.asarray(r.get("class_histogram", [0] * len(class_names)), np.int64)[: len(class_names)]
        conf.append(float(r.get("mean_confidence", 0.0)))
    total = max(1, int(hist.sum()))
    return {
        "images": len(records),
        "mean_confidence": round(float(np.mean(conf)), 4) if conf else None,
        "class_shares": {n: round(float(v) / total, 5) for n, v in zip(class_names, hist, strict=False)},
    }


def update_round_index(settings: RoundSettings, pseudo_dirs: list[Path], out_path: Path) -> dict:
    """Centroid index of the labelled train split + every pseudo folder, reusing the previous round's index."""
    from csst_edge.data.centroids import build_or_update_index
    from csst_edge.data.dataset import list_samples, load_dataset_config

    ds = load_dataset_config(settings.data)
    real = [s.label for s in list_samples(ds, "train")]
    files = [str(p) for p in real]
    luts = [ds.label_lut] * len(real)
    for folder in pseudo_dirs:
        pairs, _ = read_pseudo_manifest(folder)  # a URL folder: local cached copies
        files += [str(label) for _, _, label, _ in pairs]
        luts += [None] * len(pairs)
    previous = (
        settings.index
        if settings.index and Path(settings.index).is_file()
        else (out_path if out_path.is_file() else None)
    )
    index, info = build_or_update_index(
        files, len(ds.class_names), ds.ignore_index, luts=luts, previous=previous, workers=1, progress=False
    )
    index.save(out_path)
    pixels = index.pixels_per_class()
    total = max(1, int(pixels.sum()))
    return {
        "path": str(out_path),
        "images": index.num_images,
        "components": len(index),
        **info,
        "class_pixel_shares": {n: round(float(v) / total, 5) for n, v in zip(ds.class_names, pixels, strict=False)},
        "components_per_class": {n: int(v) for n, v in zip(ds.class_names, index.components_per_class(), strict=False)},
    }


def student_train_config(
    settings: RoundSettings, pseudo_dirs: list[Path], run_dir: Path, arch: str, base_config: dict | None
):
    """The next student's TrainConfig: the given config (or the current student's own recipe: crop, schedule,
    optimiser), with real + pseudo sources, the round's sampling and real share, no val set, and --init's
    starting point; then the user's overrides."""
    from csst_edge.fileio import read_yaml_mapping
    from csst_edge.train.config import parse_overrides, train_config_from_dict

    if settings.config is not None:
        if not Path(settings.config).is_file():
            raise ConfigError(f"{settings.config}: --config file not found")
        raw = read_yaml_mapping(Path(settings.config), ConfigError, "config")
    else:
        raw = {k: v for k, v in (base_config or {}).items() if k not in ("train", "val", "out", "pretrained", "method")}
    raw.update(
        model=arch,
        train=[{"data": str(settings.data), "split": "train"}] + [{"pseudo": str(p)} for p in pseudo_dirs],
        val=None,
        out=str(run_dir),
        device=settings.device,
        workers=settings.workers,
    )
    if settings.init == "student":
        raw.update(method="finetune", pretrained=str(settings.student))
    else:
        # from scratch = not from the deployed student or the teacher; a backbone keeps the ImageNet weights the
        # deployed student's recipe started from (an edge student without them collapses: camvid-newdrive, -12.8)
        own = (base_config or {}).get("pretrained")
        raw.update(method="student", pretrained=own if settings.config is None else raw.get("pretrained"))
    if settings.sampling is not None:
        raw["sampling"] = settings.sampling
    if settings.real_fraction is not None:
        raw["real_fraction"] = None if settings.real_fraction == "proportional" else float(settings.real_fraction)
    if settings.epochs is not None:
        raw["epochs"] = settings.epochs
    return train_config_from_dict(raw, parse_overrides(list(settings.overrides)))


def _frame_size(frames: list[dict]) -> tuple[int, int] | None:
    for f in frames:
        image = cv2.imread(f["image"], cv2.IMREAD_UNCHANGED)
        if image is not None:
            return image.shape[0], image.shape[1]
    return None


def _export_size(settings: RoundSettings, frames: list[dict]) -> tuple[int, int]:
    if settings.export_size:
        return tuple(settings.export_size)
    size = _frame_size(frames)
    if size is None:
        raise RoundError("no readable harvested frame to take the export size from; give --export-size")
    return tuple(max(32, round(v / 32) * 32) for v in size)  # every model stride divides a multiple of 32


# ---------------------------------------------------------------------------------------------- the round
def run_round(settings: RoundSettings, console=None, progress: bool = True) -> dict:
    from csst_edge.evaluate.checkpoint_eval import evaluate_checkpoint
    from csst_edge.models.checkpoint import load_checkpoint, save_checkpoint
    from csst_edge.pseudo import PseudoLabelSettings, generate_pseudo_labels
    from csst_edge.train.trainer import train

    settings.check()
    # remote checkpoints are fetched into the local cache once; the report names them as given (redacted)
    given = settings
    settings = replace(given, teacher=storage.local_copy(given.teacher), student=storage.local_copy(given.student))
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda m: console.rule(f"[bold]{m}")) if console is not None else (lambda m: None)

    say("1/7 merge harvested frames")
    merged = merge_harvests(settings.harvests, out / "frames", settings.duplicate_similarity)
    if not merged["kept"]:
        raise RoundError(
            f"no frames in {', '.join(map(storage.redact, settings.harvests))}: nothing to learn from this round"
        )

    say(f"2/7 pseudo-label {merged['kept']} frames with the teacher")
    pseudo_dir = out / "pseudo"
    pseudo_settings = PseudoLabelSettings(
        mode="multiscale" if settings.pseudo_scales else "single",
        scales=tuple(settings.pseudo_scales) or (1.0,),
        flip=settings.pseudo_flip,
        threshold=settings.pseudo_threshold,
        workers=0,
        device=settings.device,
    )
    if settings.pseudo_engine == "ray":
        from csst_edge.pseudo.ray_engine import generate_pseudo_labels_ray

        generate_pseudo_labels_ray(
            settings.teacher,
            [out / "frames"],
            pseudo_dir,
            pseudo_settings,
            address=settings.ray_address,
            progress=progress,
            console=console,
        )
    else:
        generate_pseudo_labels(
            settings.teacher, [out / "frames"], pseudo_dir, pseudo_settings, progress=progress, console=console
        )
    current = load_checkpoint(settings.student)
    class_names = list(current.get("class_names") or [])
    pseudo_dirs = [pseudo_dir, *map(storage.as_location, settings.previous_pseudo)]

    say("3/7 update the centroid index")
    index_info = update_round_index(settings, pseudo_dirs, out / "centroids.npz")

    say(f"4/7 train the next student ({current['arch']}, from {settings.init})")
    run_dir = out / "student"
    cfg = student_train_config(settings, pseudo_dirs, run_dir, current["arch"], current.get("config"))
    train(cfg, progress=progress, console=console)
    candidate = run_dir / "last.pt"

    say("5/7 evaluate current vs new student on the fixed val set")
    before, names = evaluate_checkpoint(
        settings.student, settings.val, settings.val_split, settings.device, settings.workers, per_image=True
    )
    after, _ = evaluate_checkpoint(
        candidate, settings.val, settings.val_split, settings.device, settings.workers, per_image=True
    )
    class_names = names or class_names
    mats_before, mats_after = before.pop("per_image_confusion"), after.pop("per_image_confusion")
    if before.pop("names") != after.pop("names"):  # the bootstrap pairs image i with image i
        raise RoundError(f"{settings.val}: the val split listed different images for the two students")
    interval = paired_bootstrap(
        mats_before, mats_after, class_names, resamples=settings.bootstrap_resamples, seed=settings.bootstrap_seed
    )

    say("6/7 gate")
    decision = gate_decision(
        before, after, class_names, settings.gate, settings.margin, settings.class_margin, interval
    )

    exported = None
    if decision.promote:
        say("7/7 export the promoted student")
        from csst_edge.export.onnx_export import export_onnx

        promoted = out / "promoted"
        save_checkpoint(promoted / "student.pt", load_checkpoint(candidate))
        h, w = _export_size(settings, merged["frames"])
        result = export_onnx(promoted / "student.pt", promoted / "student.onnx", h, w, output=settings.export_output)
        exported = {
            "checkpoint": str(promoted / "student.pt"),
            "onnx": str(result.path),
            "size": [h, w],
            "output": settings.export_output,
            "summary": result.summary(),
        }

    report = {
        "round": str(out),
        "teacher": storage.redact(given.teacher),
        "current_student": storage.redact(given.student),
        "new_student": str(candidate),
        "init": settings.init,
        "data_added": {
            "harvests": merged["per_harvest"],
            "frames_kept": merged["kept"],
            "pseudo_labels": _pseudo_composition(pseudo_dir, class_names),
            "previous_pseudo": [storage.redact(p) for p in settings.previous_pseudo],
        },
        # every pseudo folder this round trained on: what `--previous` of the next round carries over
        "pseudo_folders": [storage.redact(p) for p in pseudo_dirs],
        "centroid_index": index_info,
        "val": {"data": settings.val, "split": settings.val_split},
        "before": before,
        "after": after,
        "class_names": class_names,
        "decision": {
            "promote": decision.promote,
            "reason": decision.reason,
            "gate": settings.gate,
            "margin": settings.margin,
            "class_margin": settings.class_margin,
            "delta_miou": decision.delta_miou,
            "interval": [decision.low, decision.high],
            "verdict": decision.verdict,
            "regressed_classes": decision.regressed_classes,
            "bootstrap": interval.to_dict(),
        },
        "export": exported,
        "settings": {k: (storage.redact(v) if isinstance(v, (Path, str)) else v) for k, v in asdict(given).items()},
    }
    report["settings"]["harvests"] = [storage.redact(p) for p in settings.harvests]
    report["settings"]["previous_pseudo"] = [storage.redact(p) for p in settings.previous_pseudo]
    atomic_write_json(out / "round.json", _jsonable(report))
    write_round_markdown(out / "round.md", report)
    return report


def write_round_markdown(path: Path, report: dict) -> Path:
    from csst_edge.pipeline.report import markdown_table, write_markdown

    d = report["decision"]
    added = report["data_added"]
    rows = ["| harvest | frames | kept | near-duplicates | unreadable |", "|---|---:|---:|---:|---:|"]
    for folder, st in added["harvests"].items():
        rows.append(f"| `{folder}` | {st['frames']} | {st['kept']} | {st['duplicates']} | {st['unreadable']} |")
    shares = added["pseudo_labels"]["class_shares"]
    top = sorted(shares.items(), key=lambda kv: -kv[1])
    composition = ", ".join(f"{k} {100 * v:.1f}%" for k, v in top if v > 0)
    verdict = "**promoted**" if d["promote"] else "**rejected** (the current student stays)"
    export = report["export"]
    sections = [
        (
            "Decision",
            f"{verdict}: {d['reason']} (gate `{d['gate']}`, margin {100 * d['margin']:.2f} points"
            + (f", class margin {100 * d['class_margin']:.1f}" if d["gate"] == "per-class" else "")
            + ")."
            + (
                f"\n\nExported: `{export['onnx']}` ({export['size'][0]}x{export['size'][1]}, {export['output']})."
                if export
                else ""
            ),
        ),
        (
            "Data added",
            "\n".join(rows) + f"\n\n{added['frames_kept']} frames pseudo-labelled "
            f"(mean teacher confidence {added['pseudo_labels']['mean_confidence']}); class pixel shares "
            f"of the new pseudo labels: {composition or 'none'}.\n\nCentroid index: "
            f"{report['centroid_index']['images']} label maps, {report['centroid_index']['components']} "
            f"components (`{report['centroid_index']['path']}`).",
        ),
        (
            f"IoU (%) on the fixed val set ({report['val']['data']}, split {report['val']['split']})",
            markdown_table(
                {"current student": report["before"], "new student": report["after"]}, report["class_names"]
            ),
        ),
    ]
    if d.get("bootstrap"):
        sections.append(_bootstrap_section(d["bootstrap"]))
    return write_markdown(path, "Self-training round", sections)


def _bootstrap_section(b: dict) -> tuple[str, str]:
    """new - current in points, with the paired-bootstrap interval and its reading, overall and per class."""

    def pts(v) -> str:
        return "-" if v is None else f"{100 * v:+.2f}"

    def span(lo, hi) -> str:
        return "-" if lo is None or hi is None else f"[{100 * lo:+.2f}, {100 * hi:+.2f}]"

    conf = f"{100 * b['confidence']:.0f} %"
    rows = [f"| | Δ (points) | {conf} interval | reading |", "|---|---:|---:|---|"]
    rows.append(f"| **mIoU** | **{pts(b['delta_miou'])}** | **{span(b['low'], b['high'])}** | **{b['verdict']}** |")
    for c in b["per_class"]:
        rows.append(f"| {c['name']} | {pts(c['delta'])} | {span(c['low'], c['high'])} | {c['verdict']} |")
    text = (
        f"New minus current student, with a paired bootstrap over the {b['images']} val images "
        f"({b['resamples']} resamples of the images, both students' confusion matrices recomputed on each; "
        f'seed {b["seed"]}). "better" / "worse": the interval lies above / below 0.\n\n' + "\n".join(rows)
    )
    return f"Change and its {conf} interval", text


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
