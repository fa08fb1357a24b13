"""Does harvesting pay? A simulated fleet on the synthetic city-B drives, against frames picked at random.

Starts from a finished `csst-edge demo` folder (its teacher, its CSST student and its city-A / city-B data). Each
round, every simulated vehicle drives a new city-B video of its own:
  - harvested arm: the deployed student runs on the video through the vehicle runtime (`run_runtime`) with
    harvesting; the harvest is uploaded with `runtime sync` to an S3-compatible server on 127.0.0.1 (moto), and
    the round job (`run_round`: pseudo-label with the teacher, continue the student on real + pseudo labels, gate
    on city-B val) reads the bucket;
  - random arm: the same number of frames per vehicle, chosen uniformly at random from the same video, goes the same
    way (bucket, round, gate).
Each arm deploys its student only when its gate promotes it, and keeps every earlier round's pseudo labels.
After each round both deployed students are scored on city-B val with per-image confusion matrices; a paired
bootstrap over the val images gives the 95 % interval of harvested - random, and of each arm against the demo's
student (round 0).

    csst-edge demo --out runs/demo -q
    python3 -m benchmarks.fleet --demo runs/demo --out benchmarks/out/fleet

Outputs fleet.json (written after every round), fleet.md and fleet.png in --out. The drives are cached there; a
rerun starts the rounds afresh in a new --out.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import axes, interval_text, recipe_from_argv, save_figure
from csst_edge.fileio import atomic_write_json, atomic_write_text

ARMS = ("harvested", "random")


def start_s3() -> tuple[object, str]:
    """moto's S3 server on a free 127.0.0.1 port, with dummy credentials in the environment (where s3fs finds
    them, as it would find a vehicle's real ones)."""
    import logging
    import socket

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not one line per request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="fleet-bench",
        AWS_SECRET_ACCESS_KEY="fleet-bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )
    return server, endpoint


def random_harvest(video: Path, count: int, folder: Path, meta, vehicle: str, seed: int) -> int:
    """`count` frames of `video`, drawn uniformly without replacement, written as a harvest folder (same format
    as the runtime's, so sync and round treat both arms alike). Returns the number written."""
    from csst_edge.runtime.harvest import Harvester, HarvestSettings
    from csst_edge.runtime.postprocess import Prediction
    from csst_edge.runtime.sources import Frame

    cap = cv2.VideoCapture(str(video))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = cap.get(cv2.CAP_PROP_FPS) or 15.0
    chosen = set(np.random.default_rng(seed).choice(total, size=min(count, total), replace=False).tolist())
    # accept every frame it is given: no rate limit, score floor, blur floor or duplicate check
    settings = HarvestSettings(
        rate_per_min=0, min_score=0, min_sharpness=0, sharpness_ratio=0, duplicate_similarity=1.0, vehicle=vehicle
    )
    harvester = Harvester(folder, meta, settings, class_frequencies=np.ones(meta.num_classes))
    uniform = np.full((meta.num_classes, 8, 8), 1.0 / meta.num_classes, np.float32)
    index = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if index in chosen:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            frame = Frame(index, rgb, index / fps, time.time(), str(index))
            harvester.consider(frame, rgb, Prediction(uniform, meta))
        index += 1
    cap.release()
    harvester.close()
    return harvester.counts["harvested"]


def per_image(checkpoint: Path, city_b: Path, workers: int):
    from csst_edge.evaluate.checkpoint_eval import evaluate_checkpoint

    metrics, names = evaluate_checkpoint(checkpoint, city_b, "val", "auto", workers, per_image=True)
    return metrics["miou"], metrics["per_image_confusion"], names


def interval(before, after, names, resamples: int) -> dict:
    from csst_edge.evaluate.bootstrap import paired_bootstrap

    r = paired_bootstrap(before, after, names, resamples=resamples)
    return {"delta": r.delta_miou, "low": r.low, "high": r.high, "verdict": r.verdict}


@dataclass
class Recipe:
    """The fleet's settings, one command-line option each (`min_score` -> `--min-score`)."""

    demo: Path = Path("runs/demo")  # a finished `csst-edge demo` folder
    out: Path = Path("benchmarks/out/fleet")
    vehicles: int = 4
    frames: int = 150  # frames per drive (15 FPS)
    rounds: int = 3
    epochs: int = 4  # training epochs of each round's student
    rate: float = 120.0  # harvest rate limit (frames per minute of video)
    min_score: float = 0.1
    workers: int = 2
    resamples: int = 1000
    seed: int = 0


@dataclass
class Fleet:
    """What the rounds share: the demo's models and cities, the bucket, and each arm's state so far."""

    r: Recipe
    teacher: Path
    city_a: Path
    city_b: Path
    frame_size: tuple[int, int]
    deployed: dict[str, Path]
    pseudo: dict[str, list[Path]] = field(default_factory=lambda: {arm: [] for arm in ARMS})


def fleet_of(r: Recipe) -> Fleet:
    demo = r.demo
    teacher, student0 = demo / "teacher" / "last.pt", demo / "round1" / "student" / "last.pt"
    city_a, city_b = demo / "data" / "cityA.yaml", demo / "data" / "cityB.yaml"
    for p in (teacher, student0, city_a, city_b):
        if not p.is_file():
            sys.exit(f"{p}: missing; run `csst-edge demo --out {demo}` first")
    h, w = cv2.imread(str(next((demo / "data" / "cityB" / "images" / "val").iterdir()))).shape[:2]
    return Fleet(r, teacher, city_a, city_b, (h, w), {arm: student0 for arm in ARMS})


def drive(fleet: Fleet, arm: str, rnd: int, v: int, onnx: Path, meta, counts: dict[str, int]) -> Path:
    """One vehicle's drive of round `rnd`: the harvested arm runs the runtime over it, the random arm takes as many
    frames as the harvested arm's vehicle kept. Returns the harvest folder; `counts` gets its frame count."""
    from csst_edge.data.synth import write_video
    from csst_edge.runtime.harvest import HarvestSettings
    from csst_edge.runtime.loop import RuntimeSettings, run_runtime

    r, (h, w) = fleet.r, fleet.frame_size
    vehicle = f"car{v + 1}"
    video = r.out / "drives" / f"round{rnd}_{vehicle}.mp4"
    if not video.is_file():
        video.parent.mkdir(parents=True, exist_ok=True)
        write_video(video, city="B", frames=r.frames, height=h, width=w, seed=1000 * rnd + v)
    folder = r.out / arm / f"round{rnd}" / "vehicles" / vehicle
    if arm == "harvested":
        settings = HarvestSettings(rate_per_min=r.rate, min_score=r.min_score, vehicle=vehicle)
        run = run_runtime(
            onnx, str(video), RuntimeSettings(threads=r.workers, harvest=folder, harvest_settings=settings)
        )
        counts[vehicle] = int((run.harvest or {}).get("frames", 0))
    else:
        counts[vehicle] = random_harvest(video, counts[vehicle], folder, meta, vehicle, r.seed + 100 * rnd + v)
    return folder


def arm_round(fleet: Fleet, arm: str, rnd: int, counts: dict[str, int]) -> dict:
    """One arm's round: every vehicle drives and uploads, then the round job trains and gates; the arm deploys the
    new student only when the gate promotes it."""
    from csst_edge.export.onnx_export import export_onnx
    from csst_edge.pipeline.round import RoundSettings, run_round
    from csst_edge.runtime.model_meta import read_onnx_metadata
    from csst_edge.runtime.sync import SyncSettings, sync_harvest

    r = fleet.r
    t = time.perf_counter()
    onnx = r.out / arm / f"round{rnd}" / "deployed.onnx"
    if not onnx.is_file():
        export_onnx(fleet.deployed[arm], onnx, *fleet.frame_size, output="probs")
    dest = f"s3://fleet/{arm}/round{rnd}"
    meta = read_onnx_metadata(onnx)  # once per arm and round, for the random arm's harvest folders
    for v in range(r.vehicles):
        folder = drive(fleet, arm, rnd, v, onnx, meta, counts)
        sync_harvest(folder, dest, SyncSettings(vehicle=f"car{v + 1}"))
    out = r.out / arm / f"round{rnd}" / "round"
    settings = RoundSettings(
        harvests=[dest],
        teacher=fleet.teacher,
        student=fleet.deployed[arm],
        data=str(fleet.city_a),
        val=str(fleet.city_b),
        out=out,
        init="student",
        epochs=r.epochs,
        previous_pseudo=list(fleet.pseudo[arm]),
        overrides=[f"workers={r.workers}", f"seed={r.seed + rnd}"],
        workers=r.workers,
    )
    report = run_round(settings, progress=False)
    fleet.pseudo[arm].append(out / "pseudo")
    if report["decision"]["promote"]:
        fleet.deployed[arm] = Path(report["export"]["checkpoint"])
    return {
        "frames": sum(counts.values()),
        "frames_kept": report["data_added"]["frames_kept"],
        "candidate_miou": report["after"]["miou"],
        "gate": {k: report["decision"].get(k) for k in ("promote", "reason", "interval", "verdict")},
        "deployed": str(fleet.deployed[arm]),
        "wall_s": round(time.perf_counter() - t, 1),
    }


def main(argv: list[str] | None = None) -> None:
    r = recipe_from_argv(Recipe, argv, __doc__)
    fleet = fleet_of(r)
    r.out.mkdir(parents=True, exist_ok=True)
    state_path = r.out / "fleet.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"rounds": []}
    state["settings"] = {k: str(v) for k, v in asdict(r).items()}
    server, endpoint = start_s3()
    import s3fs

    s3fs.S3FileSystem(endpoint_url=endpoint).mkdir("fleet")
    base_miou, base_mats, names = per_image(fleet.deployed["harvested"], fleet.city_b, r.workers)
    state["round0_miou"] = base_miou
    t_start = time.perf_counter()
    try:
        for rnd in range(1, r.rounds + 1):
            counts: dict[str, int] = {}  # per vehicle, the harvested arm's (the random arm draws as many)
            rec = {"round": rnd, "arms": {arm: arm_round(fleet, arm, rnd, counts) for arm in ARMS}}
            mats = {}
            for arm in ARMS:
                miou, mats[arm], _ = per_image(fleet.deployed[arm], fleet.city_b, r.workers)
                rec["arms"][arm]["deployed_miou"] = miou
                rec["arms"][arm]["vs_round0"] = interval(base_mats, mats[arm], names, r.resamples)
            rec["harvested_minus_random"] = interval(mats["random"], mats["harvested"], names, r.resamples)
            state["rounds"] = [x for x in state["rounds"] if x["round"] != rnd] + [rec]
            atomic_write_json(state_path, state)
            d = rec["harvested_minus_random"]
            print(
                f"round {rnd}: harvested {100 * rec['arms']['harvested']['deployed_miou']:.1f}, random "
                f"{100 * rec['arms']['random']['deployed_miou']:.1f}, harvested - random "
                f"{delta_text(d)} ({d['verdict']})",
                flush=True,
            )
    finally:
        server.stop()
    state["wall_s"] = round(time.perf_counter() - t_start, 1)
    atomic_write_json(state_path, state)
    write_report(state, r.out)


def delta_text(d: dict) -> str:
    """A paired difference and its interval in mIoU points: "+1.23 [+0.40, +2.01]"."""
    return f"{100 * d['delta']:+.2f} {interval_text(d['low'], d['high'], digits=2)}"


def write_report(state: dict, out: Path) -> None:
    s = state["settings"]
    lines = [
        f"{s['vehicles']} vehicles x {s['frames']}-frame city-B drives per round, {s['rounds']} rounds of "
        f"{s['epochs']} epochs; round 0 (the demo's CSST student): {100 * state['round0_miou']:.1f} mIoU on city-B "
        f"val. Intervals: paired bootstrap over the val images, 95 %, in mIoU points.",
        "",
        "| round | frames (each arm) | harvested mIoU | vs round 0 | random mIoU | vs round 0 | harvested - random |",
        "|---:|---:|---:|---|---:|---|---|",
    ]
    for rec in state["rounds"]:
        a, b = rec["arms"]["harvested"], rec["arms"]["random"]
        lines.append(
            f"| {rec['round']} | {a['frames']} | {100 * a['deployed_miou']:.1f} | {delta_text(a['vs_round0'])} | "
            f"{100 * b['deployed_miou']:.1f} | {delta_text(b['vs_round0'])} | "
            f"{delta_text(rec['harvested_minus_random'])} ({rec['harvested_minus_random']['verdict']}) |"
        )
    lines += ["", "Gate decisions (the deployed student changes only when its round is promoted):", ""]
    for rec in state["rounds"]:
        for arm in ARMS:
            g = rec["arms"][arm]["gate"]
            lines.append(
                f"- round {rec['round']} {arm}: candidate {100 * rec['arms'][arm]['candidate_miou']:.1f}, "
                f"{'promoted' if g['promote'] else 'rejected'} ({g['reason']})"
            )
    lines.append(f"\nWall time: {state.get('wall_s', 0):.0f} s. Plot: fleet.png")
    atomic_write_text(out / "fleet.md", "\n".join(lines) + "\n")
    plot(state, out / "fleet.png")
    print("\n".join(lines))


def plot(state: dict, path: Path) -> Path:
    """Each arm's deployed mIoU per round, the paired interval against round 0 as error bars."""
    base = 100 * state["round0_miou"]
    fig, ax = axes((6, 4))
    for arm, colour in zip(ARMS, ("tab:blue", "tab:orange"), strict=True):
        rounds = [0] + [rec["round"] for rec in state["rounds"]]
        miou = [base] + [100 * rec["arms"][arm]["deployed_miou"] for rec in state["rounds"]]
        vs0 = [rec["arms"][arm]["vs_round0"] for rec in state["rounds"]]
        low = [0] + [100 * (d["delta"] - d["low"]) for d in vs0]
        high = [0] + [100 * (d["high"] - d["delta"]) for d in vs0]
        ax.errorbar(rounds, miou, yerr=[low, high], marker="o", capsize=4, label=f"{arm} frames", color=colour)
    ax.set_xlabel("round")
    ax.set_ylabel("city-B val mIoU (%) of the deployed student")
    ax.set_xticks(range(len(state["rounds"]) + 1))
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    main()
