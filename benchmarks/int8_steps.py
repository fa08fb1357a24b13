"""INT8 on x86, step by step: where a quantised model's time goes, what each export choice is worth, and the
inference table FP32 / INT8 before / INT8 after / OpenVINO, all in one run on one machine.

    python -m benchmarks.int8_steps --sections prepare,accuracy        # export, quantise, score (any machine)
    python -m benchmarks.int8_steps --sections table,steps,profile     # the timings (quiet cores)
    python -m benchmarks.int8_steps --models fastscnn --sizes 128x256 --steps-size 128x256 --runs 3 \
        --checkpoints "" --calibration synthetic --sections prepare,table,steps,profile --out /tmp/int8   # smoke run

Sections (each a table in benchmarks/out/int8/int8.md, everything in int8.json):
- profile: ONNX Runtime's profiler, time per op type, FP32 vs INT8 before vs INT8 after (`--profile-model`);
- steps: one export choice changed at a time against the former default (QDQ U8S8 per-tensor MinMax), latency
  ratio to FP32 (interleaved runs, same session options as `runtime run`) and argmax agreement with FP32;
- table: every model and size, FP32 / INT8 before / INT8 after on ORT, FP32 / INT8 (the QDQ model as is) on
  OpenVINO when it is installed;
- accuracy: the trained checkpoints (`--checkpoints arch=path`) on CamVid val, FP32 vs INT8 before vs after.
Latency uses the checkpoints' weights where given, else random weights (latency does not depend on them).
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from csst_edge.export.bench import environment, isa_line, parse_sizes
from csst_edge.export.quantize import Int8Options
from csst_edge.fileio import atomic_write_json, atomic_write_text

BEFORE = Int8Options(per_channel=False, fold_normalization=False)  # the former `export int8` default
AFTER = Int8Options(fold_normalization=True, per_channel=True)  # the measured recipe: the new default
STEPS = {
    "before (QDQ U8S8 per-tensor MinMax)": BEFORE,
    "+ quant_pre_process": replace(BEFORE, pre_process=True),
    "S8S8": replace(BEFORE, types="S8S8"),
    "per-channel": replace(BEFORE, per_channel=True),
    "QOperator": replace(BEFORE, quant_format="QOperator"),
    "only Conv quantised": replace(BEFORE, op_types_to_quantize=("Conv",)),
    "output Resize quantised": replace(BEFORE, float_resize=False),
    "normalisation folded into conv 1": replace(BEFORE, fold_normalization=True),
    "after (folded + per-channel)": AFTER,
    "after + S8S8": replace(AFTER, types="S8S8"),
    "after + quant_pre_process": replace(AFTER, pre_process=True),
}
CALIBRATION_STEPS = {"MinMax": "minmax", "Entropy": "entropy", "Percentile": "percentile"}
DEFAULT_CHECKPOINTS = {
    "fastscnn": "benchmarks/out/newdrive/deployed/last.pt",
    "lraspp_lite0": "benchmarks/out/newdrive/deployed_lite0/last.pt",
    "bisenet_r18": "benchmarks/out/newdrive/deployed_bisenet/last.pt",  # 4K samples from random weights
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="fastscnn,lraspp_lite0,bisenet_r18")
    p.add_argument("--sizes", default="512x1024,1024x2048")
    p.add_argument("--threads", default="1,2", help="comma-separated ORT / OpenVINO thread counts")
    p.add_argument("--runs", type=int, default=10, help="timed runs per model (median), after 2 warm-up runs")
    p.add_argument("--calibration", default="camvid", help="calibration frames: dataset, image folder, or 'synthetic'")
    p.add_argument("--calibration-frames", type=int, default=16)
    p.add_argument(
        "--checkpoints",
        default=",".join(f"{k}={v}" for k, v in DEFAULT_CHECKPOINTS.items()),
        help="arch=checkpoint,...: trained weights (latency and accuracy); other models use random weights",
    )
    p.add_argument("--profile-model", default="fastscnn")
    p.add_argument("--steps-size", default="512x1024", help="size of the steps section")
    p.add_argument("--data", default="camvid", help="accuracy: dataset whose val split is scored")
    p.add_argument("--eval-size", default="352x480", help="accuracy: export size (CamVid frames are 360x480)")
    p.add_argument(
        "--sections",
        default="prepare,table,steps,profile,accuracy",
        help="prepare (export and quantise every model: no timing, any machine), table, steps, profile, accuracy; "
        "a run keeps the other sections of an earlier int8.json",
    )
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/int8"))
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------ models
def export_fp32(arch: str, checkpoint: str | None, size, out: Path) -> Path:
    """The deployed computation (uint8 NHWC frame in, normalisation in the graph, logits out), cached."""
    from csst_edge.export.bench import resolve_model
    from csst_edge.export.onnx_export import export_onnx

    path = out / "onnx" / f"{arch}_{size[0]}x{size[1]}.onnx"
    if not path.is_file():
        source = checkpoint if checkpoint and Path(checkpoint).is_file() else resolve_model(arch).state
        export_onnx(source, path, size[0], size[1], output="logits", verify_count=1)
    return path


def quantised(fp32: Path, options: Int8Options, tag: str, frames) -> tuple[Path, float]:
    """(INT8 model, argmax agreement with FP32 on the calibration frames), cached by tag."""
    from csst_edge.export.quantize import quantize_int8

    path = fp32.with_name(f"{fp32.stem}_{tag}.onnx")
    record = path.with_suffix(".json")
    if path.is_file() and record.is_file():
        return path, json.loads(record.read_text())["agreement"]
    result = quantize_int8(fp32, path, frames, options)
    atomic_write_json(record, {"options": asdict(options), "agreement": result.agreement})
    return path, result.agreement


def calibration_frames(args, size) -> list[np.ndarray]:
    return _frames(args.calibration, args.calibration_frames, size[0], size[1])


@functools.lru_cache(maxsize=8)
def _frames(source: str, count: int, height: int, width: int) -> list[np.ndarray]:
    """Decoded once per size: every section of a run calibrates on the same frames."""
    from csst_edge.export.frames import load_frames

    return load_frames(None if source == "synthetic" else source, count, height, width, split="train")


# ------------------------------------------------------------------------------------------------ timing
def open_backend(path: Path, threads: int, engine: str = "ort"):
    """The runtime's own backends, with the session options `runtime run` uses (ORT_ENABLE_ALL, no spinning)."""
    from csst_edge.runtime.backends import OnnxRuntimeBackend, OpenVinoBackend

    if engine == "openvino":
        return OpenVinoBackend(path, threads=threads)
    return OnnxRuntimeBackend(
        path, ["CPUExecutionProvider"], threads=threads, session_config={"session.intra_op.allow_spinning": "0"}
    )


def interleaved_ms(backends: dict, frame: np.ndarray, runs: int) -> dict[str, float]:
    """Median latency of each backend, runs interleaved so a burst of other load hits all of them alike."""
    for backend in backends.values():
        for _ in range(2):
            backend.infer(frame)
    times = collections.defaultdict(list)
    for _ in range(max(1, runs)):
        for name, backend in backends.items():
            t = time.perf_counter()
            backend.infer(frame)
            times[name].append(1000 * (time.perf_counter() - t))
    return {name: float(np.median(v)) for name, v in times.items()}


def op_profile(path: Path, threads: int, frame: np.ndarray, runs: int) -> dict[str, float]:
    """ms per run spent in each op type (ORT's profiler: kernel time of every node, summed by op type)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.enable_profiling = True
    so.profile_file_prefix = str(path.parent / f"profile_{path.stem}_t{threads}")
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.ascontiguousarray(frame[None])
    for _ in range(2 + runs):
        session.run(None, {name: x})
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    per_op: dict[str, float] = collections.Counter()
    for e in events:  # the first runs are warm-up: every node has the same count of events, so scale by runs
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 1000 / (2 + runs)
    return dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


# ------------------------------------------------------------------------------------------------ sections
def section_profile(args, checkpoints, out: Path, say) -> list[dict]:
    rows = []
    for size in parse_sizes(args.sizes):
        fp32 = export_fp32(args.profile_model, checkpoints.get(args.profile_model), size, out)
        frames = calibration_frames(args, size)
        models = {"fp32": fp32, "int8 before": quantised(fp32, BEFORE, "before", frames)[0]}
        models["int8 after"] = quantised(fp32, AFTER, "after", frames)[0]
        for threads in threads_list(args):
            for label, path in models.items():
                per_op = op_profile(path, threads, frames[0], args.runs)
                rows.append({"size": size_text(size), "threads": threads, "model": label, "per_op_ms": per_op})
                top = ", ".join(f"{k} {v:.1f}" for k, v in list(per_op.items())[:4])
                say(f"profile {size_text(size)} t{threads} {label}: {sum(per_op.values()):.1f} ms ({top})")
    return rows


def section_steps(args, checkpoints, out: Path, say) -> list[dict]:
    (size,) = parse_sizes(args.steps_size, "--steps-size")
    model = args.profile_model
    fp32 = export_fp32(model, checkpoints.get(model), size, out)
    frames = calibration_frames(args, size)
    variants = {name: quantised(fp32, options, f"step{i}", frames) for i, (name, options) in enumerate(STEPS.items())}
    rows = []
    for threads in threads_list(args):
        backends = {"fp32": open_backend(fp32, threads)} | {
            n: open_backend(p, threads) for n, (p, _) in variants.items()
        }
        ms = interleaved_ms(backends, frames[0], args.runs)
        for name, (_, agreement) in variants.items():
            rows.append(
                {"step": name, "size": size_text(size), "threads": threads, "fp32_ms": ms["fp32"], "int8_ms": ms[name],
                 "speedup": ms["fp32"] / ms[name], "agreement": agreement}
            )  # fmt: skip
            say(f"step t{threads} {name}: {ms[name]:.1f} ms, {ms['fp32'] / ms[name]:.2f}x FP32 ({ms['fp32']:.1f} ms)")
    return rows


def every_model_and_size(args, checkpoints, out: Path):
    """(model, size, its FP32 export, calibration frames at that size) for the table's rows."""
    for model in split_list(args.models):
        for size in parse_sizes(args.sizes):
            yield model, size, export_fp32(model, checkpoints.get(model), size, out), calibration_frames(args, size)


def section_table(args, checkpoints, out: Path, say) -> list[dict]:
    from csst_edge.runtime.backends import openvino_available

    rows = []
    for model, size, fp32, frames in every_model_and_size(args, checkpoints, out):
        paths = {"ort fp32": fp32, "ort int8 before": quantised(fp32, BEFORE, "before", frames)[0]}
        paths["ort int8 after"] = quantised(fp32, AFTER, "after", frames)[0]
        for threads in threads_list(args):
            backends = {name: open_backend(p, threads) for name, p in paths.items()}
            if openvino_available():
                backends["openvino fp32"] = open_backend(fp32, threads, "openvino")
                backends["openvino int8 (QDQ after)"] = open_backend(paths["ort int8 after"], threads, "openvino")
            ms = interleaved_ms(backends, frames[0], args.runs)
            rows.append({"model": model, "size": size_text(size), "threads": threads, "ms": ms})
            say(f"table {model} {size_text(size)} t{threads}: " + ", ".join(f"{k} {v:.1f}" for k, v in ms.items()))
    return rows


def section_accuracy(args, checkpoints, out: Path, say) -> list[dict]:
    from csst_edge.export.evaluation import evaluate_onnx

    (size,) = parse_sizes(args.eval_size, "--eval-size")
    # a run that scores some models keeps the earlier rows of the others (and of a model it could not score)
    earlier = json.loads((out / "int8.json").read_text()).get("accuracy", []) if (out / "int8.json").is_file() else []
    rows = {row["model"]: row for row in earlier}
    for model, checkpoint in checkpoints.items():
        if not Path(checkpoint).is_file():
            say(f"accuracy {model}: {checkpoint} not found, skipped")
            continue
        fp32 = export_fp32(model, checkpoint, size, out / "eval")
        frames = calibration_frames(args, size)
        variants = {"fp32": fp32, "int8 before": quantised(fp32, BEFORE, "before", frames)[0]}
        variants["int8 after"] = quantised(fp32, AFTER, "after", frames)[0]
        for name, method in CALIBRATION_STEPS.items():
            if method != AFTER.calibrate_method:
                variants[f"int8 after, {name}"] = quantised(
                    fp32, replace(AFTER, calibrate_method=method), f"after_{method}", frames
                )[0]
        miou = {name: evaluate_onnx(path, args.data, "val", None, 2)["miou"] for name, path in variants.items()}
        rows[model] = {"model": model, "checkpoint": checkpoint, "size": size_text(size), "miou": miou}
        say(f"accuracy {model}: " + ", ".join(f"{k} {100 * v:.2f}" for k, v in miou.items()))
    return list(rows.values())


# ------------------------------------------------------------------------------------------------ report
def write_report(result: dict, out: Path) -> str:
    env = result["environment"]
    lines = ["# INT8 on this CPU, step by step", "", isa_line(env), f"onnxruntime {env.get('onnxruntime')}", ""]
    if result.get("table"):
        names = list(result["table"][0]["ms"])
        lines += ["## Latency (ms, median, batch 1)", "", "| model | size | threads | " + " | ".join(names)
                  + " | INT8 after / FP32 |", "|---|---|---:|" + "---:|" * (len(names) + 1)]  # fmt: skip
        for r in result["table"]:
            ms = r["ms"]
            ratio = ms["ort fp32"] / ms["ort int8 after"]
            cells = " | ".join(f"{ms[n]:.1f}" for n in names)
            lines.append(f"| {r['model']} | {r['size']} | {r['threads']} | {cells} | {ratio:.2f}x |")
        lines.append("")
    if result.get("steps"):
        lines += ["## Steps (one choice changed at a time)", "", "| step | threads | INT8 ms | FP32 ms | INT8 / FP32 "
                  "speed | argmax agreement |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in result["steps"]:
            lines.append(
                f"| {r['step']} | {r['threads']} | {r['int8_ms']:.1f} | {r['fp32_ms']:.1f} | {r['speedup']:.2f}x | "
                f"{100 * r['agreement']:.2f}% |"
            )
        lines.append("")
    if result.get("profile"):
        lines += ["## Profile (ms per run, kernel time by op type; ORT profiler)", ""]
        for r in result["profile"]:
            top = ", ".join(f"{k} {v:.1f}" for k, v in list(r["per_op_ms"].items())[:6])
            lines.append(f"- {r['size']}, {r['threads']} thread(s), {r['model']}: {sum(r['per_op_ms'].values()):.1f} "
                         f"ms: {top}")  # fmt: skip
        lines.append("")
    if result.get("accuracy"):
        names = list(result["accuracy"][0]["miou"])
        lines += ["## CamVid val mIoU (%)", "", "| model | size | " + " | ".join(names) + " |",
                  "|---|---|" + "---:|" * len(names)]  # fmt: skip
        for r in result["accuracy"]:
            lines.append(f"| {r['model']} | {r['size']} | " + " | ".join(f"{100 * r['miou'][n]:.2f}" for n in names)
                         + " |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "int8.md", text)
    return text


def threads_list(args) -> list[int]:
    return [int(t) for t in split_list(args.threads)]


def split_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def size_text(size) -> str:
    return f"{size[0]}x{size[1]}"


def section_prepare(args, checkpoints, out: Path, say) -> list[str]:
    """Every model the timed sections run, exported and quantised (cached): the timing runs then only time."""
    made = []
    for _model, _size, fp32, frames in every_model_and_size(args, checkpoints, out):
        made += [
            str(quantised(fp32, options, tag, frames)[0]) for tag, options in (("before", BEFORE), ("after", AFTER))
        ]
    (size,) = parse_sizes(args.steps_size, "--steps-size")
    fp32 = export_fp32(args.profile_model, checkpoints.get(args.profile_model), size, out)
    frames = calibration_frames(args, size)
    made += [str(quantised(fp32, o, f"step{i}", frames)[0]) for i, o in enumerate(STEPS.values())]
    say(f"prepared {len(made)} INT8 models")
    return made


SECTIONS = {
    "prepare": section_prepare,
    "table": section_table,
    "steps": section_steps,
    "profile": section_profile,
    "accuracy": section_accuracy,
}


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    wanted = split_list(args.sections)
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--sections: unknown {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    checkpoints = dict(item.split("=", 1) for item in split_list(args.checkpoints))
    say = lambda m: print(m, flush=True)  # noqa: E731
    path = out / "int8.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    result["environment"] = environment(max(threads_list(args)))
    for name in [n for n in SECTIONS if n in wanted]:
        t = time.perf_counter()
        result[name] = SECTIONS[name](args, checkpoints, out, say)
        result.setdefault("settings", {})[name] = {k: str(v) for k, v in vars(args).items()}
        result[f"{name}_seconds"] = round(time.perf_counter() - t, 1)
        atomic_write_json(path, result)  # after every section: a killed run keeps what it measured
    print(write_report(result, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
