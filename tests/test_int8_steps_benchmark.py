"""benchmarks/int8_steps.py on a tiny model: every section runs and reports both latencies, the ratio and the
profile by op type (no speed is asserted: that depends on the machine)."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks import int8_steps


def run_benchmark(args: list[str]) -> None:
    """In a child process: OpenVINO's and ONNX Runtime's thread pools and the profiler stay out of pytest's process."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.int8_steps", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_sections_run_and_the_report_has_every_table(tmp_path):
    out = tmp_path / "int8"
    args = ["--models=fastscnn", "--sizes=64x128", "--steps-size=64x128", "--threads=1", "--runs=1",
            "--calibration=synthetic", "--calibration-frames=2", "--checkpoints=", f"--out={out}"]  # fmt: skip
    run_benchmark(args + ["--sections=prepare,table,steps,profile"])
    result = json.loads((out / "int8.json").read_text())
    (row,) = result["table"]
    assert {"ort fp32", "ort int8 before", "ort int8 after"} <= set(row["ms"]) and min(row["ms"].values()) > 0
    assert [r["step"] for r in result["steps"]] == list(int8_steps.STEPS)
    assert all(0.0 <= r["agreement"] <= 1.0 and r["speedup"] > 0 for r in result["steps"])
    profiles = {r["model"]: r["per_op_ms"] for r in result["profile"]}
    assert "Conv" in profiles["fp32"] and "QLinearConv" in profiles["int8 after"]
    assert "Mul" not in profiles["int8 after"]  # the input normalisation was folded into the first conv
    report = (out / "int8.md").read_text()
    assert "## Steps" in report and "## Profile" in report and "AVX2" in report

    # a later run of one section keeps the others
    run_benchmark(args + ["--sections=table"])
    again = json.loads((out / "int8.json").read_text())
    assert again["steps"] == result["steps"] and len(again["table"]) == 1


def test_accuracy_of_one_model_keeps_the_earlier_rows(tmp_path):
    out = tmp_path / "int8"
    out.mkdir()
    earlier = {"model": "lraspp_lite0", "checkpoint": "x.pt", "size": "352x480", "miou": {"fp32": 0.45}}
    (out / "int8.json").write_text(json.dumps({"accuracy": [earlier, {**earlier, "model": "fastscnn"}]}))
    args = int8_steps.parse_args([f"--out={out}", "--eval-size=64x64"])
    messages = []
    rows = int8_steps.section_accuracy(args, {"fastscnn": str(tmp_path / "missing.pt")}, out, messages.append)
    # fastscnn was asked for but has no checkpoint: its earlier row stays, as does lite0's
    assert rows == [earlier, {**earlier, "model": "fastscnn"}]
    assert "missing.pt not found" in messages[0]
