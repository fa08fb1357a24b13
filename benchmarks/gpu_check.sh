#!/usr/bin/env bash
# One command for a GPU machine (issue 11): versions, the CUDA tests, the GPU speed table. Under 8 minutes on one
# GPU; run from anywhere in the checkout, the project need not be pip-installed (PYTHONPATH=. is set here).
#
#   bash benchmarks/gpu_check.sh                 # results in $OUT (default benchmarks/out/gpu)
#
# Steps, each under its own timeout, its exit code and seconds recorded in $OUT/summary.json:
#   env    nvidia-smi, python / torch / CUDA / cuDNN / onnxruntime versions and providers, the modules the
#          tests need                                           -> $OUT/env.txt
#   tests  python3 -m pytest -q -m gpu tests/test_gpu.py        -> $OUT/gpu_tests.txt, $OUT/gpu_tests.xml (junit)
#   bench  python3 benchmarks/gpu_speed.py                      -> $OUT/gpu_speed.{json,md,txt}
# The bench runs even when the tests fail (one GPU session should bring back both). Exit status: 0 only when
# every step passed; 1 otherwise. Without a CUDA GPU it prints "no CUDA GPU: gpu checks skipped" and exits 0;
# a GPU that nvidia-smi sees but torch cannot use is an error, not a skip.
#
# Timeouts (seconds) can be changed: GPU_CHECK_ENV_TIMEOUT (40), GPU_CHECK_TESTS_TIMEOUT (180),
# GPU_CHECK_BENCH_TIMEOUT (360, cut to what is left of GPU_CHECK_TOTAL_TIMEOUT, 470, after the other steps). PYTHON picks the interpreter (default python3); GPU_SPEED_ARGS adds arguments to
# gpu_speed.py (e.g. "--compile-mode max-autotune-no-cudagraphs --compile-timeout 150").
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/out/gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export OUT
T_ENV=${GPU_CHECK_ENV_TIMEOUT:-40}
T_TESTS=${GPU_CHECK_TESTS_TIMEOUT:-180}
T_BENCH_MAX=${GPU_CHECK_BENCH_TIMEOUT:-360}
T_TOTAL=${GPU_CHECK_TOTAL_TIMEOUT:-470}
START=$(date +%s)
STEPS_JSON=""
OVERALL=0

json_str() { # a JSON string literal (backslashes, quotes, control characters escaped)
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\t'/\\t}
    printf '"%s"' "${s//[$'\001'-$'\037']/?}"
}

record() { # name rc seconds timeout_s detail
    local timed_out=false
    if [[ $2 -eq 124 || $2 -eq 137 ]]; then timed_out=true; fi
    STEPS_JSON+="${STEPS_JSON:+, }$(json_str "$1"): {\"rc\": $2, \"seconds\": $3, \"timeout_s\": $4, "
    STEPS_JSON+="\"timed_out\": $timed_out, \"detail\": $(json_str "$5")}"
    if [[ $2 -ne 0 ]]; then OVERALL=1; fi
    echo "== step $1: rc $2 in ${3}s${5:+ ($5)}"
}

write_summary() { # status [reason]
    local extra=""
    if [[ -n ${2:-} ]]; then extra=", \"reason\": $(json_str "$2")"; fi
    printf '{"status": "%s"%s, "exit_code": %d, "seconds": %d, "out": %s, "steps": {%s}}\n' \
        "$1" "$extra" "$OVERALL" "$(($(date +%s) - START))" "$(json_str "$OUT")" "$STEPS_JSON" \
        >"$OUT/summary.json"
}

# a failure of the script itself (a bug here, a full disk) must not look like success either
on_exit() {
    local rc=$?
    if [[ $rc -ne 0 && ! -s "$OUT/summary.json" ]]; then
        OVERALL=1
        write_summary error "gpu_check.sh itself stopped early (rc $rc); steps so far are listed"
        echo "gpu_check: stopped early (rc $rc)" >&2
    fi
}
trap on_exit EXIT
rm -f "$OUT/summary.json"

# ------------------------------------------------------------------------------------------ is there a GPU?
smi_gpus=""
if command -v nvidia-smi >/dev/null 2>&1; then
    smi_gpus=$(timeout 20 nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
torch_cuda=$(timeout 60 "$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo "none")
if [[ $torch_cuda != 1 ]]; then
    if [[ -n $smi_gpus && $smi_gpus != 0 ]]; then
        why="nvidia-smi lists $smi_gpus GPU(s) but torch cannot use CUDA"
        [[ $torch_cuda == none ]] && why="nvidia-smi lists $smi_gpus GPU(s) but $PY cannot import torch"
        echo "gpu_check: $why (driver / CUDA build mismatch?): failing, not skipping" >&2
        OVERALL=1
        record detect 1 0 60 "$why"
        write_summary failed "$why"
        exit 1
    fi
    echo "no CUDA GPU: gpu checks skipped"
    write_summary skipped "no CUDA GPU (torch.cuda.is_available() is not true, nvidia-smi lists none)"
    exit 0
fi

# ------------------------------------------------------------------------------------------------- env
t0=$(date +%s)
set +e
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  host: $(hostname)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    timeout 20 nvidia-smi || echo "nvidia-smi failed (rc $?)"
    timeout "$T_ENV" "$PY" - <<'EOF'
import importlib, importlib.metadata, platform, sys
print("python", platform.python_version(), sys.executable)
import torch
print("torch", torch.__version__, "| CUDA", torch.version.cuda, "| cuDNN", torch.backends.cudnn.version())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i}", p.name, f"sm_{p.major}{p.minor}", f"{p.total_memory / 2**30:.1f} GiB",
          "bf16" if torch.cuda.is_bf16_supported() else "no bf16")
missing = []
for name in ("numpy", "cv2", "yaml", "typer", "rich", "pytest", "torchvision", "onnx", "onnxruntime", "onnxslim"):
    try:
        m = importlib.import_module(name)
        extra = ""
        if name == "onnxruntime":
            extra = " providers: " + ", ".join(m.get_available_providers())
        version = getattr(m, "__version__", None)
        if version is None:
            try:
                version = importlib.metadata.version(name)
            except Exception:
                version = "?"
        print(f"{name} {version}{extra}")
    except Exception as e:
        print(f"{name} MISSING ({type(e).__name__}: {e})")
        missing.append(name)
required = [m for m in missing if m in ("numpy", "cv2", "yaml", "typer", "rich", "pytest")]
if required:
    print("missing modules the tests need:", ", ".join(required))
    sys.exit(3)
EOF
} 2>&1 | tee "$OUT/env.txt"
rc=${PIPESTATUS[0]}
set -e
record env "$rc" $(($(date +%s) - t0)) "$T_ENV" "$(grep '^missing modules' "$OUT/env.txt" || true)"

# ----------------------------------------------------------------------------------------------- tests
t0=$(date +%s)
rm -f "$OUT/gpu_tests.xml" "$OUT/gpu_tests.txt"
set +e
timeout -k 10 "$T_TESTS" "$PY" -m pytest -q -m gpu -rsfE --durations=0 --junitxml="$OUT/gpu_tests.xml" tests/test_gpu.py 2>&1 |
    tee "$OUT/gpu_tests.txt"
rc=${PIPESTATUS[0]}
set -e
# junit counts; a run where no gpu test actually passed (all skipped) is a failure here, not a pass
counts=$("$PY" - "$OUT/gpu_tests.xml" <<'EOF' 2>/dev/null || echo "no junit xml"
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suite = root if root.tag == "testsuite" else root.find("testsuite")
n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
print(f"{passed} passed, {n['failures']} failed, {n['errors']} errors, {n['skipped']} skipped")
EOF
)
if [[ $rc -eq 0 && ! $counts =~ ^[1-9][0-9]*\ passed ]]; then
    rc=1
    counts="$counts: no gpu test passed"
fi
[[ $rc -eq 124 || $rc -eq 137 ]] && counts="timed out after ${T_TESTS}s; $counts"
record tests "$rc" $(($(date +%s) - t0)) "$T_TESTS" "$counts"

# ----------------------------------------------------------------------------------------------- bench
t0=$(date +%s)
rm -f "$OUT/gpu_speed.json" "$OUT/gpu_speed.md" "$OUT/gpu_speed.txt"
# the bench gets what the total budget leaves (the tests usually finish well inside their timeout)
T_BENCH=$((T_TOTAL - (t0 - START) - 15))
((T_BENCH > T_BENCH_MAX)) && T_BENCH=$T_BENCH_MAX
if ((T_BENCH < 60)); then
    echo "gpu_check: only ${T_BENCH}s of the ${T_TOTAL}s budget left: gpu_speed.py not run" | tee "$OUT/gpu_speed.txt"
    rc=1
else
    set +e
    # shellcheck disable=SC2086  # GPU_SPEED_ARGS is split into words on purpose
    timeout -k 10 "$T_BENCH" "$PY" benchmarks/gpu_speed.py --out "$OUT" --budget-s $((T_BENCH - 40)) \
        --compile-timeout 90 ${GPU_SPEED_ARGS:-} 2>&1 | tee "$OUT/gpu_speed.txt"
    rc=${PIPESTATUS[0]}
    set -e
fi
detail=""
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    detail="timed out after ${T_BENCH}s; "
elif [[ $rc -ne 0 ]]; then
    detail="$(grep -m3 '^gpu_speed: FAILED' "$OUT/gpu_speed.txt" | tr '\n' ' ' || true)"
fi
if [[ -s $OUT/gpu_speed.json ]]; then
    detail+="$(grep -c '"status": "ok"' "$OUT/gpu_speed.json" || true) rows ok in gpu_speed.json"
else
    detail+="no gpu_speed.json written"
    [[ $rc -eq 0 ]] && rc=1
fi
record bench "$rc" $(($(date +%s) - t0)) "$T_BENCH" "$detail"

# ------------------------------------------------------------------------------------------------- end
if [[ $OVERALL -eq 0 ]]; then write_summary passed; else write_summary failed; fi
echo "gpu_check: $([[ $OVERALL -eq 0 ]] && echo passed || echo FAILED) in $(($(date +%s) - START))s; summary in $OUT/summary.json"
exit "$OVERALL"
