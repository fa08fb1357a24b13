"""Training speed: images/s of each student at a 512x512 crop, and the fast crop schedule's wall-clock gain.

    python3 benchmarks/train_speed.py throughput                 # students, 512x512, this machine's devices
    python3 benchmarks/train_speed.py schedule --epochs 30        # coarse2fine+ vs constant on CamVid (Fast-SCNN)
    python3 benchmarks/train_speed.py throughput --models deeplabv3plus_lite0 deeplabv3plus_lite1 \
        deeplabv3plus_lite2 --crop 288x384 --batch 8 --channels 128 --channels-last --loss ohem --tag teachers

`throughput` times forward + backward + SGD step on random tensors (data loading excluded, so it is the model's
ceiling), after warm-up, on the CPU (threads = cores) and on CUDA when present (fp32 and AMP fp16). `--crop` is one
side or HxW; `--channels` sets the ASPP / decoder width of the Lite teachers (the camvid benchmark's
`--teacher-channels`), `--channels-last` and `--loss` match a training run's settings, and `--tag` names the output
(`train_speed_throughput_<tag>.json`), so the teachers' table does not overwrite the students'.
`schedule` trains Fast-SCNN twice on CamVid train with the same epochs and samples per epoch, once with a constant
crop and once with coarse2fine+, and reports wall time, the ratio, and val mIoU of both. Results go to
benchmarks/out/train_speed_*.json and .md.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from csst_edge.fileio import atomic_write_json, atomic_write_text
from csst_edge.models import create_model
from csst_edge.train.losses import SegLoss, build_criterion

OUT = Path(__file__).resolve().parent / "out"
STUDENTS = ("fastscnn", "bisenet_r18", "icnet_r18", "icnet_r50")


def parse_crop(text: str) -> tuple[int, int]:
    """'512' -> (512, 512); '288x384' -> (288, 384) (height x width)."""
    parts = str(text).lower().split("x")
    try:
        h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except (ValueError, IndexError):
        raise SystemExit(f"--crop: expected a side (512) or HxW (288x384), got {text!r}") from None
    if len(parts) > 2 or h < 1 or w < 1:
        raise SystemExit(f"--crop: expected a side (512) or HxW (288x384), got {text!r}")
    return h, w


def train_throughput(
    name: str,
    device: torch.device,
    batch: int,
    crop: int | tuple[int, int],
    iters: int,
    warmup: int,
    amp: bool = False,
    num_classes: int = 19,
    channels: int | None = None,
    channels_last: bool = False,
    loss: str = "ce",
) -> float:
    torch.manual_seed(0)
    h, w = (crop, crop) if isinstance(crop, int) else crop
    # the width option exists only on the Lite teachers; the other models keep their one size
    kwargs = {"channels": channels} if channels and name.startswith("deeplabv3plus_lite") else {}
    model = create_model(name, num_classes, **kwargs).to(device).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    criterion = SegLoss(build_criterion(loss), model.aux_weights)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x = torch.randn(batch, 3, h, w, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, num_classes, (batch, h, w), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss, _ = criterion(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * iters / (time.perf_counter() - t)


def cmd_throughput(args) -> None:
    rows = []
    crop = parse_crop(args.crop)
    devices = [("cpu", False)] + ([("cuda", False), ("cuda", True)] if torch.cuda.is_available() else [])
    for name in args.models:
        for dev, amp in devices:
            batch = args.batch if dev == "cpu" else args.gpu_batch
            ips = train_throughput(
                name,
                torch.device(dev),
                batch,
                crop,
                args.iters if dev == "cpu" else 20,
                args.warmup,
                amp,
                channels=args.channels,
                channels_last=args.channels_last,
                loss=args.loss,
            )
            row = {
                "model": name,
                "device": dev + (" amp-fp16" if amp else ""),
                "batch": batch,
                "crop": f"{crop[0]}x{crop[1]}",
                "img_per_s": round(ips, 2),
                "s_per_batch": round(batch / ips, 3),
            }
            rows.append(row)
            print(row, flush=True)
    info = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "channels": args.channels,
        "channels_last": args.channels_last,
        "loss": args.loss,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "train_speed_throughput" + (f"_{args.tag}" if args.tag else "")
    atomic_write_json(out / f"{stem}.json", {**info, "rows": rows})
    settings = f"loss {args.loss}" + (", channels-last" if args.channels_last else "")
    settings += f", Lite width {args.channels}" if args.channels else ""
    md = [
        f"Training throughput (forward+backward+SGD, random data, {settings}), torch {info['torch']}, "
        f"{info['threads']} CPU threads{', GPU ' + info['gpu'] if info['gpu'] else ''}.",
        "",
        "| model | device | batch | crop | img/s | s/batch |",
        "|---|---|---:|---|---:|---:|",
    ]
    md += [
        f"| {r['model']} | {r['device']} | {r['batch']} | {r['crop']} | {r['img_per_s']:.2f} | {r['s_per_batch']:.3f} |"
        for r in rows
    ]
    atomic_write_text(out / f"{stem}.md", "\n".join(md) + "\n")
    print("\n".join(md))


def cmd_schedule(args) -> None:
    from csst_edge.train.config import parse_overrides, train_config_from_dict
    from csst_edge.train.trainer import train

    results = {}
    for schedule in ("constant", "coarse2fine+"):
        out = Path(args.out) / f"schedule_{schedule.replace('+', 'plus')}"
        cfg = train_config_from_dict(
            {"train": [{"data": args.data, "split": "train"}], "val": {"data": args.data, "split": "val"}},
            parse_overrides(
                [
                    "model=fastscnn",
                    f"epochs={args.epochs}",
                    f"samples_per_epoch={args.samples}",
                    f"batch_size={args.batch}",
                    f"crop=[{args.crop_h},{args.crop_w}]",
                    f"crop_schedule={schedule}",
                    f"max_batch={args.max_batch}",
                    "optim.lr=0.045",
                    "optim.weight_decay=4e-5",
                    f"eval_every={args.epochs}",
                    f"workers={args.workers}",
                    f"device={args.device}",
                    f"out={out}",
                    "seed=0",
                ]
            ),
        )
        result = train(cfg, progress=not args.quiet)  # a finished run resumes to its end and only re-evaluates
        from csst_edge.fileio import read_jsonl

        # time per epoch as the trainer logged it (training only; evaluation and start-up excluded)
        epochs = [r for r in read_jsonl(out / "metrics.jsonl") if r.get("type") == "epoch"]
        train_seconds = sum(e["time_s"] for e in epochs)
        results[schedule] = {
            "train_s": round(train_seconds, 1),
            "val_miou": result.best_miou,
            "epochs": len(epochs),
            "crops": sorted({f"{e['crop'][0]}x{e['crop'][1]}x{e['batch_size']}" for e in epochs}),
        }
        print(schedule, results[schedule], flush=True)
    ratio = results["constant"]["train_s"] / results["coarse2fine+"]["train_s"]
    summary = {
        "data": args.data,
        "epochs": args.epochs,
        "samples_per_epoch": args.samples,
        "batch": args.batch,
        "crop": [args.crop_h, args.crop_w],
        "device": args.device,
        "results": results,
        "speedup_coarse2fine_plus": round(ratio, 3),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_json(OUT / "train_speed_schedule.json", summary)
    md = [
        f"Fast-SCNN on {args.data} train, {args.epochs} epochs x {args.samples} samples, base crop "
        f"{args.crop_h}x{args.crop_w} batch {args.batch}, device {args.device}.",
        "",
        "| schedule | train time (s) | val mIoU (%) | crops x batch |",
        "|---|---:|---:|---|",
    ]
    for k, r in results.items():
        md.append(f"| {k} | {r['train_s']:.0f} | {100 * (r['val_miou'] or 0):.1f} | {', '.join(r['crops'])} |")
    md.append(f"\ncoarse2fine+ speed-up: {ratio:.2f}x")
    atomic_write_text(OUT / "train_speed_schedule.md", "\n".join(md) + "\n")
    print("\n".join(md))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--models", nargs="+", default=list(STUDENTS))
    t.add_argument("--crop", default="512", help="one side (512) or HxW (288x384)")
    t.add_argument("--batch", type=int, default=4)
    t.add_argument("--gpu-batch", type=int, default=16)
    t.add_argument("--iters", type=int, default=5)
    t.add_argument("--warmup", type=int, default=2)
    t.add_argument("--channels", type=int, default=None, help="ASPP / decoder width of the Lite teachers")
    t.add_argument("--channels-last", action="store_true", help="channels-last memory format (faster on CPU)")
    t.add_argument("--loss", default="ce", choices=["ce", "ohem"])
    t.add_argument("--tag", default="", help="suffix of the output files: train_speed_throughput_<tag>.json")
    t.add_argument("--out", default=str(OUT))
    s = sub.add_parser("schedule")
    s.add_argument("--data", default="camvid")
    s.add_argument("--epochs", type=int, default=30)
    s.add_argument("--samples", type=int, default=367)
    s.add_argument("--batch", type=int, default=8)
    s.add_argument("--max-batch", type=int, default=32)
    s.add_argument("--crop-h", type=int, default=288)
    s.add_argument("--crop-w", type=int, default=384)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--device", default="auto")
    s.add_argument("--out", default=str(OUT / "runs"))
    s.add_argument("--quiet", action="store_true")
    # both runs must see the same machine load: delete a run's folder to measure it again
    args = ap.parse_args()
    cmd_throughput(args) if args.cmd == "throughput" else cmd_schedule(args)


if __name__ == "__main__":
    main()
