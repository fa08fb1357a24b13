"""camvid-newdrive: the vehicle loop on real frames, with the product's own commands.

The home city is CamVid train (all 367 labels); the vehicle drives CamVid's Seq05VD, of which no train or val frame
comes (`camvid_newdrive`: 90 unlabelled `drive` frames and drive.mp4, 41 labelled `val` frames). Stages, each cached
in --out so a rerun continues where the last one stopped (training resumes from last.pt, pseudo-labelling skips
finished images, a finished stage is read back from newdrive.json):

  1. teacher     the pretrained DeepLabV3+-Lite on all 367 CamVid train labels, OHEM, coarse2fine+
  2. deployed    the student (Fast-SCNN by default) on the 367 labels only: the model on the vehicle; exported to
                 ONNX with probabilities out (what the harvester reads)
  3. drive       `runtime run` of the deployed ONNX model over drive.mp4 with harvesting, as a vehicle would
                 (`--harvest-from all`: every frame kept; `random`: as many frames as the harvest kept, at random)
  4. round       `round` on that harvest: pseudo-label (multi-scale + flip), centroid index, train the next student
                 from scratch on the 367 labels + the harvest, gate on camvid_newdrive val (paired bootstrap), export
Every student is scored on the new drive's val and on CamVid val (the home city must not be forgotten).
Outputs in --out: newdrive.json (every stage's numbers and recipe) and newdrive.md (the tables).

    python3 -m benchmarks.newdrive                                  # teacher, deployed, drive, round (seed 0)
    python3 -m benchmarks.newdrive --stages deployed,drive,round --seed 1 --suffix _s1
    python3 -m benchmarks.newdrive --stages round --harvest-from all --suffix _all   # ablations: see --help
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.common import StageLog, epochs_for, interval_text, rare5, recipe_from_argv
from csst_edge.fileio import atomic_write_text

STAGES = ("teacher", "deployed", "control", "drive", "round")


@dataclass
class Recipe:
    """Every choice of the benchmark; the defaults are the measured recipe (benchmarks/README.md, camvid-newdrive)."""

    out: Path = Path("benchmarks/out/newdrive")
    home: str = "camvid"  # labelled home city: all of its train split
    drive: str = "camvid_newdrive"  # the new drive: split `drive` (unlabelled) and `val`
    teacher: str = "deeplabv3plus_lite0"
    teacher_pretrained: str | None = "efficientnet-lite0"
    teacher_channels: int = 128  # ASPP / decoder width (2.2x faster to train than 256 on a CPU)
    teacher_samples: int = 12_000
    teacher_lr: float = 0.01
    student: str = "fastscnn"
    student_pretrained: str | None = None
    student_lr: float = 0.045
    student_samples: int = 5_900
    crop: tuple[int, int] = (288, 384)
    batch_size: int = 8
    max_batch: int = 32
    seed: int = 0
    suffix: str = ""  # appended to the student stages' folders (deployed, drive, round)
    deployed_suffix: str | None = None  # the deployed student a round starts from (default: suffix)
    harvest_suffix: str | None = None  # the harvest a round learns from (default: suffix)
    # the harvester on the vehicle: frames per minute of media time (drive.mp4 is 1 frame/s) and its score floor
    harvest_rate_per_min: float = 60.0
    harvest_min_score: float = 0.25
    harvest_from: str = "harvest"  # harvest | all (every drive frame) | random (as many as the harvest, at random)
    # the round
    init: str = "scratch"  # scratch (CSST) | student (continue the deployed one)
    sampling: str = "centroid"
    real_fraction: float | None = 0.5  # None: in proportion to the set sizes
    pseudo_scales: tuple[float, ...] = (0.75, 1.0, 1.25, 1.5)
    pseudo_threshold: float | None = None
    channels_last: bool = True
    device: str = "auto"
    workers: int = 2
    quiet: bool = False
    stages: tuple[str, ...] = STAGES
    extra: dict = field(default_factory=dict)

    @property
    def deployed_name(self) -> str:
        return "deployed" + (self.suffix if self.deployed_suffix is None else self.deployed_suffix)

    @property
    def harvest_name(self) -> str:
        return "harvest" + (self.suffix if self.harvest_suffix is None else self.harvest_suffix)


def _home_count(r: Recipe) -> int:
    from csst_edge.data.dataset import list_samples, load_dataset_config

    return len(list_samples(load_dataset_config(r.home), "train"))


def teacher_config(r: Recipe) -> dict:
    n = _home_count(r)
    epochs = epochs_for(r.teacher_samples, n)
    return {
        "model": r.teacher,
        "model_kwargs": {"channels": r.teacher_channels} if r.teacher.startswith("deeplabv3plus") else {},
        "pretrained": r.teacher_pretrained,
        "train": [{"data": r.home, "split": "train"}],
        "val": {"data": r.home, "split": "val"},
        "epochs": epochs,
        "samples_per_epoch": n,
        "crop": list(r.crop),
        "crop_schedule": "coarse2fine+",
        "batch_size": r.batch_size,
        "max_batch": r.max_batch,
        "seed": 0,
        "optim": {"lr": r.teacher_lr, "weight_decay": 5e-4, "warmup_iters": 100},
        "loss": {"name": "ohem", "ohem_min_kept": 50_000},
        "eval_every": max(1, epochs // 5),
        "channels_last": r.channels_last,
        "device": r.device,
        "workers": r.workers,
        "out": str(r.out / "teacher"),
    }


def deployed_config(r: Recipe) -> dict:
    """The labelled-only student: constant crops (at equal samples they beat coarse2fine+ for the students)."""
    n = _home_count(r)
    epochs = epochs_for(r.student_samples, n)
    return {
        "model": r.student,
        "pretrained": r.student_pretrained,
        "train": [{"data": r.home, "split": "train"}],
        "val": None,
        "epochs": epochs,
        "samples_per_epoch": n,
        "crop": list(r.crop),
        "crop_schedule": "constant",
        "sampling": "random",
        "batch_size": r.batch_size,
        "max_batch": r.max_batch,
        "seed": r.seed,
        "optim": {"lr": r.student_lr, "weight_decay": 4e-5, "warmup_iters": 100},
        "eval_every": 1000,
        "channels_last": r.channels_last,
        "device": r.device,
        "workers": r.workers,
        "out": str(r.out / r.deployed_name),
    }


# ------------------------------------------------------------------------------------------------ state
def load_state(r: Recipe) -> dict:
    return StageLog(r.out / "newdrive.json").load()


def save_stage(r: Recipe, name: str, record: dict) -> None:
    StageLog(r.out / "newdrive.json").save(name, record)


def score(checkpoint: Path, r: Recipe) -> dict:
    """A checkpoint's mIoU and per-class IoU on the new drive's val and on CamVid val (single scale)."""
    from csst_edge.evaluate.checkpoint_eval import evaluate_checkpoint

    result = {}
    for key, data in (("newdrive", r.drive), ("camvid", r.home)):
        metrics, names = evaluate_checkpoint(checkpoint, data, "val", r.device, r.workers)
        result[key] = {"miou": metrics["miou"], "per_class_iou": metrics["per_class_iou"]}
        result["class_names"] = names
    return result


def _train(config: dict, r: Recipe) -> float:
    from csst_edge.train.config import train_config_from_dict
    from csst_edge.train.trainer import train

    t = time.perf_counter()
    train(train_config_from_dict(config), progress=not r.quiet)
    return time.perf_counter() - t


# ------------------------------------------------------------------------------------------------ stages
def stage_teacher(r: Recipe) -> dict:
    wall = _train(teacher_config(r), r)
    record = {"recipe": teacher_config(r), **score(r.out / "teacher" / "last.pt", r), "wall_s": round(wall, 1)}
    save_stage(r, "teacher", record)
    return record


def stage_deployed(r: Recipe) -> dict:
    """The labelled-only student, trained, scored and exported for the vehicle (probabilities out)."""
    from csst_edge.export.onnx_export import export_onnx

    folder = r.out / r.deployed_name
    wall = _train(deployed_config(r), r)
    onnx = folder / "student.onnx"
    h, w = _frame_size(r)
    if not onnx.is_file():
        export_onnx(folder / "last.pt", onnx, h, w, output="probs")
    record = {
        "recipe": deployed_config(r),
        **score(folder / "last.pt", r),
        "onnx": str(onnx),
        "export_size": [h, w],
        "wall_s": round(wall, 1),
    }
    save_stage(r, r.deployed_name, record)
    return record


def stage_control(r: Recipe) -> dict:
    """The control for a round from the deployed student: the same student trained on for the same budget on the
    home labels alone. A round --init student that beats it gains from the drive's pseudo labels, not from the
    extra iterations."""
    config = {
        **deployed_config(r),
        "method": "finetune",
        "pretrained": str(r.out / r.deployed_name / "last.pt"),
        "out": str(r.out / f"control{r.suffix}"),
    }
    wall = _train(config, r)
    record = {
        "recipe": config,
        **score(r.out / f"control{r.suffix}" / "last.pt", r),
        "deployed": r.deployed_name,
        "wall_s": round(wall, 1),
    }
    save_stage(r, f"control{r.suffix}", record)
    return record


def _frame_size(r: Recipe) -> tuple[int, int]:
    """The drive frames' size rounded to a multiple of 32 (every student's stride divides it): 360x480 -> 352x480."""
    import cv2

    from csst_edge.data.dataset import list_samples, load_dataset_config

    first = list_samples(load_dataset_config(r.drive), "drive", require_labels=False)[0].image
    h, w = cv2.imread(str(first)).shape[:2]
    return max(32, round(h / 32) * 32), max(32, round(w / 32) * 32)


def harvest_settings(r: Recipe, keep_all: bool):
    from csst_edge.runtime.harvest import HarvestSettings

    if keep_all:  # every frame the source gives: no rate limit, score, sharpness or duplicate filter
        return HarvestSettings(
            rate_per_min=0, min_score=0, min_sharpness=0, sharpness_ratio=0, duplicate_similarity=1.0, vehicle="bench"
        )
    return HarvestSettings(rate_per_min=r.harvest_rate_per_min, min_score=r.harvest_min_score, vehicle="newdrive")


def stage_drive(r: Recipe) -> dict:
    """`runtime run` of the deployed model over the drive, harvesting as the vehicle would (or every frame, or a
    random set of frames as large as the vehicle's own harvest)."""
    from csst_edge.data.dataset import list_samples, load_dataset_config
    from csst_edge.runtime.loop import RuntimeSettings, run_runtime

    ds = load_dataset_config(r.drive)
    harvest = r.out / r.harvest_name
    deployed = load_state(r)["stages"].get(r.deployed_name)
    if deployed is None:
        raise SystemExit(f"stage drive needs the deployed student {r.deployed_name}: run --stages deployed first")
    source: str = str(ds.root / "drive.mp4")
    vehicle_harvest = "harvest" + (r.suffix if r.deployed_suffix is None else r.deployed_suffix)
    if r.harvest_from != "harvest" and harvest.name == vehicle_harvest and (harvest / "manifest.jsonl").is_file():
        # a harvest folder accumulates drives: these frames would join the vehicle's own harvest and spoil it
        raise SystemExit(
            f"--harvest-from {r.harvest_from} would add frames to the vehicle's harvest {harvest}; "
            "give the stage its own --suffix (and no --harvest-suffix)"
        )
    if r.harvest_from == "random":
        own = load_state(r)["stages"].get("drive" + (r.deployed_suffix or ""))
        if own is None:
            raise SystemExit("--harvest-from random draws as many frames as the vehicle's harvest: run that first")
        frames = list_samples(ds, "drive", require_labels=False)
        chosen = sorted(random.Random(r.seed).sample(frames, own["harvest"]["frames"]), key=lambda f: f.name)
        folder = r.out / f"random_frames{r.suffix}"
        folder.mkdir(parents=True, exist_ok=True)
        for f in chosen:
            link = folder / Path(f.image).name
            if not link.exists():
                link.symlink_to(Path(f.image).resolve())
        source = str(folder)
    t = time.perf_counter()
    run = run_runtime(
        deployed["onnx"],
        source,
        RuntimeSettings(
            threads=r.workers,
            harvest=harvest,
            log=r.out / f"{r.harvest_name}.run.jsonl",
            harvest_settings=harvest_settings(r, keep_all=r.harvest_from != "harvest"),
            folder_fps=1.0,  # the drive's frames are 1 s apart, as in drive.mp4
        ),
    )
    record = {
        "from": r.harvest_from,
        "source": source,
        "frames_seen": run.frames,
        "fps": run.fps,
        "harvest": run.harvest,
        "wall_s": round(time.perf_counter() - t, 1),
    }
    save_stage(r, "drive" + r.suffix, record)
    return record


def round_settings(r: Recipe):
    from csst_edge.pipeline.round import RoundSettings

    deployed = r.out / r.deployed_name / "last.pt"
    return RoundSettings(
        harvests=[r.out / r.harvest_name],
        teacher=r.out / "teacher" / "last.pt",
        student=deployed,
        data=r.home,
        val=r.drive,
        out=r.out / f"round{r.suffix}",
        init=r.init,
        sampling=r.sampling,
        real_fraction="proportional" if r.real_fraction is None else r.real_fraction,
        pseudo_scales=r.pseudo_scales,
        pseudo_threshold=r.pseudo_threshold,
        overrides=[f"seed={r.seed}", f"channels_last={str(r.channels_last).lower()}"],
        device=r.device,
        workers=r.workers,
    )


def stage_round(r: Recipe) -> dict:
    """`round` on the harvest: the next student, gated on the new drive's val; then both students on CamVid val."""
    from csst_edge.pipeline.round import run_round

    t = time.perf_counter()
    settings = round_settings(r)
    report = run_round(settings, progress=not r.quiet)
    wall = time.perf_counter() - t
    after = score(Path(report["new_student"]), r)
    record = {
        "recipe": {k: v for k, v in asdict(r).items() if k not in ("out", "quiet", "stages", "device", "workers")},
        **after,
        "gate": {
            "promote": report["decision"]["promote"],
            "delta_miou": report["decision"]["delta_miou"],
            "interval": report["decision"]["interval"],
            "verdict": report["decision"]["verdict"],
        },
        "frames": report["data_added"]["frames_kept"],
        "pseudo_mean_confidence": report["data_added"]["pseudo_labels"]["mean_confidence"],
        "deployed": r.deployed_name,
        "harvest": r.harvest_name,
        "wall_s": round(wall, 1),
    }
    save_stage(r, f"round{r.suffix}", record)
    return record


# ------------------------------------------------------------------------------------------------ report
def write_report(r: Recipe) -> str:
    """newdrive.md: every scored stage on both val sets, each round against the student it started from."""
    from csst_edge.pipeline.report import markdown_table

    stages = load_state(r)["stages"]
    scored = {k: v for k, v in stages.items() if "newdrive" in v}
    if not scored:
        return ""
    names = next(iter(scored.values()))["class_names"]
    lines = [
        "camvid-newdrive: home city CamVid train (367 labels); the vehicle drives Seq05VD; val = the new drive's 41 "
        "labelled frames (and CamVid val for the home city), single scale.",
        "",
        "| stage | new-drive val mIoU | CamVid val mIoU | new-drive rare-5 | frames | pseudo conf. | gate | wall (s) |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for name, rec in scored.items():
        gate = rec.get("gate")
        shown = ""
        if gate:
            shown = f"{'promoted' if gate['promote'] else 'rejected'} {interval_text(*gate['interval'])}"
        conf = rec.get("pseudo_mean_confidence")
        lines.append(
            f"| {name} | {100 * rec['newdrive']['miou']:.1f} | {100 * rec['camvid']['miou']:.1f} | "
            f"{rare5(rec['newdrive']['per_class_iou'], names):.1f} | {rec.get('frames', '')} | "
            f"{'' if conf is None else f'{conf:.3f}'} | {shown} | {rec.get('wall_s', 0):.0f} |"
        )
    for name, rec in scored.items():
        base = stages.get(rec.get("deployed", ""))
        if base and "newdrive" in base:
            gain = {k: 100 * (rec[k]["miou"] - base[k]["miou"]) for k in ("newdrive", "camvid")}
            lines.append(
                f"\n{name} - {rec['deployed']}: new drive {gain['newdrive']:+.1f} mIoU, "
                f"CamVid val {gain['camvid']:+.1f}"
            )
    for name, rec in stages.items():
        if name.startswith("drive") and rec.get("harvest"):
            h = rec["harvest"]
            lines.append(
                f"\n{name} ({rec['from']}): {rec['frames_seen']} frames seen at {rec['fps']:.1f} FPS, "
                f"{h['frames']} kept; decisions: "
                + ", ".join(f"{k} {v}" for k, v in sorted(h.get("counts", {}).items()))
            )
    lines += ["", "Per-class IoU (%) on the new drive's val:", ""]
    lines.append(markdown_table({k: v["newdrive"] for k, v in scored.items()}, names))
    text = "\n".join(lines) + "\n"
    atomic_write_text(r.out / "newdrive.md", text)
    return text


# ------------------------------------------------------------------------------------------------ command line
def parse_args(argv: list[str] | None = None) -> Recipe:
    """Every Recipe field as an option of the same name (--teacher-samples, --real-fraction ...); 'none' clears an
    optional one."""
    choices = {"stages": STAGES, "harvest_from": ("harvest", "all", "random")}
    return recipe_from_argv(Recipe, argv, __doc__, choices=choices)


RUNNERS = {
    "teacher": stage_teacher,
    "deployed": stage_deployed,
    "control": stage_control,
    "drive": stage_drive,
    "round": stage_round,
}


def main(argv: list[str] | None = None) -> None:
    r = parse_args(argv)
    r.out.mkdir(parents=True, exist_ok=True)
    for stage in STAGES:
        if stage in r.stages:
            record = RUNNERS[stage](r)
            if "newdrive" in record:
                print(
                    f"{stage}{'' if stage == 'teacher' else r.suffix}: new-drive val "
                    f"{100 * record['newdrive']['miou']:.1f}, CamVid val {100 * record['camvid']['miou']:.1f}",
                    flush=True,
                )
    print(write_report(r))


if __name__ == "__main__":
    main()
