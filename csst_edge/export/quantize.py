"""ONNX Runtime static INT8 quantisation of an exported model, with an automatic float fallback.

How the uint8 input is handled: the exported graph starts `Cast(uint8→float) → [Transpose] → Mul → Add` (the
normalisation) and ends with `[Resize] → Softmax/ArgMax → Cast`. By default the normalisation is folded into the
first convolution (export/fold.py: in an INT8 graph ORT runs that Mul / Add slowly), so the first convolution reads
the raw 0..255 pixels, which 8-bit activations represent exactly. The quantiser is told to leave the boundary
nodes in float: the first convolution's input gets one QuantizeLinear, and the logits are upsampled and argmax-ed
in float (8-bit logits make ties at class boundaries, and ORT's uint8 Resize is no faster: `float_resize`).
Calibration feeds the model uint8 frames exactly as the vehicle will, so no float-input copy of the model is needed.

Defaults (benchmarks/README.md, INT8 section): QDQ, U8S8 (uint8 activations, int8 weights: the VNNI instruction's
own types; S8S8 was slower on AVX-512 VNNI), per-channel weight scales (the depthwise convs of the edge students need
them), MinMax calibration, normalisation folded.

Automatic float fallback (`auto_fallback_max_drop`): per-node sensitivity is measured once on the calibration
frames as the relative squared error each quantisable node *adds* at its output (its error in the fake-quantised
model minus the largest error already present at its nearest quantisable ancestors). The most sensitive nodes are
then kept in float, 1, 2, 4, ... of them, until the measured mIoU drop (from `eval_fn`) is within the limit;
a bisection then finds the smallest such number. The calibration ranges are computed once and cached.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from csst_edge.export.errors import ExportError
from csst_edge.export.verify import load_onnx_checked, onnx_meta
from csst_edge.fileio import atomic_write_bytes
from csst_edge.runtime.model_meta import ModelMeta, set_onnx_metadata

TYPE_PAIRS = {"U8S8": ("QUInt8", "QInt8"), "S8S8": ("QInt8", "QInt8")}
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
# nodes whose output error is ranked for the fallback: the ones that carry weights
SENSITIVE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# ops allowed in the float boundary at either end of the graph
_PRE_OPS = {"Cast", "Transpose", "Mul", "Add", "Sub", "Div", "Identity", "Unsqueeze", "Reshape"}
_POST_OPS = {"Cast", "ArgMax", "Softmax", "Resize", "Identity", "Transpose", "Reshape", "Squeeze", "Upsample"}


@dataclass
class QuantizeResult:
    path: Path
    meta: ModelMeta
    seconds: float
    quant_format: str
    types: str
    per_channel: bool
    calibration_frames: int
    boundary_nodes: list[str]
    excluded_nodes: list[str]  # the user's + the automatic fallback's (boundary nodes not included)
    auto_excluded: list[str]
    fp32_miou: float | None = None
    int8_miou: float | None = None
    max_drop: float | None = None
    target_met: bool | None = None
    agreement: float | None = None  # argmax agreement INT8 vs FP32 on the calibration frames
    history: list[dict] = field(default_factory=list)
    sensitivity: list[tuple[str, float]] = field(default_factory=list)
    size_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def drop(self) -> float | None:
        if self.fp32_miou is None or self.int8_miou is None:
            return None
        return self.fp32_miou - self.int8_miou

    def summary(self) -> str:
        s = f"{self.path} ({self.size_bytes / 2**20:.2f} MiB, {self.quant_format} {self.types}"
        s += ", per-channel" if self.per_channel else ""
        s += f", {self.calibration_frames} calibration frame(s), {len(self.excluded_nodes)} node(s) kept in float)"
        if self.agreement is not None:
            s += f"; argmax agreement with FP32 {100 * self.agreement:.2f}%"
        if self.drop is not None:
            s += (
                f"; mIoU FP32 {100 * self.fp32_miou:.2f} → INT8 {100 * self.int8_miou:.2f} (drop {100 * self.drop:.2f})"
            )
        if self.target_met is False:
            s += f"; drop limit {100 * self.max_drop:.2f} NOT met even with every ranked node in float"
        return s

    def to_dict(self) -> dict:
        return {
            k: (str(v) if isinstance(v, Path) else v.to_dict() if isinstance(v, ModelMeta) else v)
            for k, v in self.__dict__.items()
        } | {"drop": self.drop}


class FrameCalibrationReader:
    """CalibrationDataReader over uint8 frames, already batched and laid out as the model's input."""

    def __init__(self, input_name: str, batches: list[np.ndarray]):
        self.input_name, self.batches = input_name, batches
        self._next = 0

    def get_next(self):
        if self._next >= len(self.batches):
            return None
        self._next += 1
        return {self.input_name: self.batches[self._next - 1]}

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self.batches)


def input_batches(frames: Sequence[np.ndarray], meta: ModelMeta) -> list[np.ndarray]:
    """Frames → model input batches: resized to a static model's size, grouped by its batch, in its layout."""
    from csst_edge.export.frames import resize_frame

    h, w = meta.input_height or meta.export_height, meta.input_width or meta.export_width
    frames = [resize_frame(np.asarray(f, np.uint8), h, w) for f in frames]
    b = meta.batch or 1
    batches = []
    for i in range(0, len(frames), b):
        group = frames[i : i + b]
        group += [group[-1]] * (b - len(group))  # a static batch must be full
        x = np.stack(group)
        batches.append(np.ascontiguousarray(x.transpose(0, 3, 1, 2) if meta.input_layout == "nchw" else x))
    return batches


# ------------------------------------------------------------------------------------------- graph helpers
def name_nodes(proto) -> None:
    """Give every node a unique name: exclusion lists and sensitivities refer to nodes by name."""
    seen = set()
    for i, node in enumerate(proto.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.name or node.op_type}_n{i}"
        seen.add(node.name)


def boundary_nodes(proto, float_resize: bool = True) -> list[str]:
    """Names of the pre-processing nodes (from the input up to the first weighted op) and the post-processing
    nodes (from the output back to the last weighted op), which stay in float."""
    graph = proto.graph
    consumers: dict[str, list] = {}
    producer = {}
    for node in graph.node:
        for t in node.input:
            consumers.setdefault(t, []).append(node)
        for t in node.output:
            producer[t] = node
    init = {i.name for i in graph.initializer}
    const_outputs = {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    pre, frontier = [], [i.name for i in graph.input if i.name not in init]
    visited = set()
    while frontier:
        tensor = frontier.pop()
        for node in consumers.get(tensor, []):
            if node.name in visited or node.op_type not in _PRE_OPS:
                continue
            # only nodes fed by the input chain and constants: a Mul inside the network is not pre-processing
            feeds = [t for t in node.input if t and t not in init and t not in const_outputs]
            if all(t == tensor or producer.get(t) is None or producer[t].name in visited for t in feeds):
                visited.add(node.name)
                pre.append(node.name)
                frontier.extend(node.output)
    post, stack = [], [o.name for o in graph.output]
    seen = set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen or node.op_type not in _POST_OPS:
            continue
        if not float_resize and node.op_type in ("Resize", "Upsample"):
            continue  # the Resize and what is before it are quantised
        seen.add(node.name)
        post.append(node.name)
        stack.extend(t for t in node.input[:1])  # follow the data input only (Resize scales/sizes are constants)
    return pre + post


def candidate_ancestors(proto, candidates: set[str]) -> dict[str, set[str]]:
    """For each candidate node, its nearest candidate ancestors (through any non-candidate nodes)."""
    producer = {t: n for n in proto.graph.node for t in n.output}
    result = {}
    for node in proto.graph.node:
        if node.name not in candidates:
            continue
        found, stack, seen = set(), list(node.input), set()
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            p = producer.get(t)
            if p is None:
                continue
            if p.name in candidates:
                found.add(p.name)
            else:
                stack.extend(p.input)
        result[node.name] = found
    return result


def _with_outputs(proto, tensor_names: list[str]):
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    existing = {o.name for o in model.graph.output}
    for name in tensor_names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model


def _session(model_or_path, threads: int | None = None, optimize: bool = True):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
    data = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])


def node_sensitivity(
    fp32_proto,
    int8_path: Path,
    batches: list[np.ndarray],
    input_name: str,
    candidates: list[str],
    threads: int | None = None,
) -> list[tuple[str, float]]:
    """(node, added relative squared error) for each candidate, most sensitive first."""
    import onnx

    # compare what the next layer sees: the node's output after its QuantizeLinear → DequantizeLinear pair.
    # Where the quantiser folded a following Relu/Clip into that pair, the node writes the Relu's output
    # tensor (present in both graphs) and only the dequantised value has the Relu applied.
    int8_proto = onnx.load(str(int8_path))
    int8_nodes = {n.name: n for n in int8_proto.graph.node}
    consumers: dict[str, list] = {}
    for n in int8_proto.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)

    def dequantized(tensor: str) -> str:
        for q in consumers.get(tensor, []):
            if q.op_type == "QuantizeLinear" and q.input[0] == tensor:
                for dq in consumers.get(q.output[0], []):
                    if dq.op_type == "DequantizeLinear":
                        return dq.output[0]
        return tensor

    fp32_tensors = {o for n in fp32_proto.graph.node for o in n.output}
    pairs = {
        name: (int8_nodes[name].output[0], dequantized(int8_nodes[name].output[0]))
        for name in candidates
        if name in int8_nodes and int8_nodes[name].output[0] in fp32_tensors
    }
    fp32 = _session(
        _with_outputs(fp32_proto, list(dict.fromkeys(a for a, _ in pairs.values()))), threads, optimize=False
    )
    int8 = _session(
        _with_outputs(int8_proto, list(dict.fromkeys(b for _, b in pairs.values()))), threads, optimize=False
    )
    err = {name: 0.0 for name in pairs}
    ref = {name: 0.0 for name in pairs}
    for x in batches:
        a = dict(zip([o.name for o in fp32.get_outputs()], fp32.run(None, {input_name: x}), strict=True))
        b = dict(zip([o.name for o in int8.get_outputs()], int8.run(None, {input_name: x}), strict=True))
        for name, (ta, tb) in pairs.items():
            fa, fb = a[ta].astype(np.float64), b[tb].astype(np.float64)
            err[name] += float(((fa - fb) ** 2).sum())
            ref[name] += float((fa**2).sum())
    rel = {name: err[name] / (ref[name] + 1e-12) for name in pairs}
    ancestors = candidate_ancestors(fp32_proto, set(rel))
    added = {
        name: max(0.0, e - max((rel[a] for a in ancestors.get(name, ()) if a in rel), default=0.0))
        for name, e in rel.items()
    }
    return sorted(added.items(), key=lambda kv: (-kv[1], kv[0]))


def argmax_agreement(
    fp32_path, int8_path, batches: list[np.ndarray], input_name: str, meta: ModelMeta, threads: int | None = None
) -> float:
    a, b = _session(fp32_path, threads), _session(int8_path, threads)
    agree = total = 0
    for x in batches:
        ya, yb = a.run(None, {input_name: x})[0], b.run(None, {input_name: x})[0]
        if meta.output_kind != "labels":
            ya, yb = ya.argmax(1), yb.argmax(1)
        agree += int((ya == yb).sum())
        total += ya.size
    return agree / max(1, total)


# -------------------------------------------------------------------------------------------- quantise
def smallest_passing(passes: Callable[[int], bool], upper: int, max_tries: int) -> tuple[int | None, list]:
    """The smallest k in 1..`upper` for which `passes(k)`, for a `passes` that stays true once it is true.

    Tries 1, 2, 4, ... (the last try capped at `upper`) until one passes, then bisects between the last k that
    failed and the first that passed; never more than `max_tries` calls. Each try costs a quantisation and an
    evaluation, so doubling first finds a small k in few tries when a few float nodes suffice.
    Returns (the smallest passing k, or None when no try passed; [(k, passed), ...] in the order tried). With the
    budget spent mid-bisection the k returned passed but may not be the smallest.
    """
    tries: list[tuple[int, bool]] = []

    def attempt(k: int) -> bool:
        tries.append((k, bool(passes(k))))
        return tries[-1][1]

    failed, passed, k = 0, None, 1
    while passed is None and k <= upper and len(tries) < max_tries:  # doubling
        if attempt(k):
            passed = k
        elif k == upper:
            break
        else:
            failed, k = k, min(2 * k, upper)
    while passed is not None and passed - failed > 1 and len(tries) < max_tries:  # bisection
        mid = (failed + passed) // 2
        if attempt(mid):
            passed = mid
        else:
            failed = mid
    return passed, tries


@dataclass
class Int8Options:
    """How ONNX Runtime quantises: format, types, granularity, calibration, which ops, and pre-processing."""

    quant_format: str = "QDQ"
    types: str = "U8S8"
    per_channel: bool = True  # per-tensor scales cost lraspp_lite0 5.9 mIoU on CamVid val (its depthwise convs)
    calibrate_method: str = "minmax"
    symmetric_activations: bool = False
    op_types_to_quantize: tuple[str, ...] | None = None  # None: every op ONNX Runtime can quantise
    pre_process: bool = False  # onnxruntime's quant_pre_process (shape inference + graph fusion) first
    # the input normalisation folded into the first conv (export/fold.py): the slow NHWC Mul / Add are gone
    fold_normalization: bool = True
    # the output Resize (logits up to the frame size) in float: 8-bit logits make ties at class boundaries, but
    # the float Resize is the largest single kernel of a quantised Fast-SCNN (benchmarks/README.md, INT8 section)
    float_resize: bool = True

    def check(self, src: Path) -> None:
        if self.quant_format.upper() not in ("QDQ", "QOPERATOR"):
            raise ExportError(f"quant_format must be QDQ or QOperator, got {self.quant_format!r}")
        if self.types.upper() not in TYPE_PAIRS:
            raise ExportError(f"types must be one of {', '.join(TYPE_PAIRS)}, got {self.types!r}")
        if self.calibrate_method.lower() not in CALIBRATION_METHODS:
            raise ExportError(
                f"calibrate_method must be one of {', '.join(CALIBRATION_METHODS)}, got {self.calibrate_method!r}"
            )


class _Quantizer:
    """One FP32 model, its calibration batches and options: `run(float_nodes)` writes a quantised copy with those
    nodes (and the float boundary) left in float. The calibration ranges are computed once and cached."""

    def __init__(self, fp32_path: Path, batches: list[np.ndarray], input_name: str, boundary: list[str], options):
        self.fp32_path, self.batches, self.input_name = fp32_path, batches, input_name
        self.boundary, self.options, self.trials = boundary, options, 0
        self.cache = fp32_path.with_name("calibration.json")

    def run(self, float_nodes: list[str]) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        o = self.options
        self.trials += 1
        path = self.fp32_path.with_name(f"int8_{self.trials}.onnx")
        act, weight = TYPE_PAIRS[o.types.upper()]
        kwargs = {"op_types_to_quantize": list(o.op_types_to_quantize)} if o.op_types_to_quantize else {}
        try:
            quantize_static(
                str(self.fp32_path),
                str(path),
                FrameCalibrationReader(self.input_name, self.batches),
                quant_format=QuantFormat.QDQ if o.quant_format.upper() == "QDQ" else QuantFormat.QOperator,
                per_channel=o.per_channel,
                activation_type=getattr(QuantType, act),
                weight_type=getattr(QuantType, weight),
                nodes_to_exclude=self.boundary + list(float_nodes),
                calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[o.calibrate_method.lower()]),
                extra_options={"ActivationSymmetric": bool(o.symmetric_activations)},
                calibration_cache_path=str(self.cache),
                **kwargs,
            )
        except Exception as e:  # onnxruntime raises bare exceptions of many kinds: one clear error
            raise ExportError(f"onnxruntime quantisation failed: {type(e).__name__}: {str(e)[:300]}") from e
        return path


@dataclass
class FallbackResult:
    path: Path
    miou: float | None
    float_nodes: list[str]
    target_met: bool | None
    history: list[dict]
    sensitivity: list[tuple[str, float]]
    notes: list[str]


def float_fallback(
    quantizer: _Quantizer,
    proto,
    first: Path,
    fp32_miou: float,
    int8_miou: float,
    candidates: list[str],
    user_excluded: list[str],
    eval_fn: Callable[[Path], float],
    max_drop: float,
    max_trials: int,
    threads: int | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> FallbackResult:
    """Keep the most sensitive weighted nodes in float, as few as possible, until the mIoU drop is within
    `max_drop`; without a passing number, the best trial seen. `first` is the model with none in float."""
    history = [{"float_nodes": 0, "miou": int8_miou, "drop": fp32_miou - int8_miou}]
    if fp32_miou - int8_miou <= max_drop:
        return FallbackResult(first, int8_miou, [], True, history, [], [])
    if not candidates:
        return FallbackResult(first, int8_miou, [], False, history, [], ["no quantised weighted nodes to fall back"])
    say("ranking nodes by quantisation sensitivity")
    sensitivity = node_sensitivity(proto, first, quantizer.batches, quantizer.input_name, candidates, threads)
    ranked = [name for name, _ in sensitivity]
    results = {0: (int8_miou, first)}

    def passes(k: int) -> bool:
        path = quantizer.run(user_excluded + ranked[:k])
        miou = float(eval_fn(path))
        results[k] = (miou, path)
        history.append({"float_nodes": k, "miou": miou, "drop": fp32_miou - miou})
        say(f"{k} node(s) in float: mIoU {100 * miou:.2f} (drop {100 * (fp32_miou - miou):.2f})")
        return fp32_miou - miou <= max_drop

    passing, tries = smallest_passing(passes, len(ranked), max_trials - 1)
    notes = []
    if passing is None:  # limit not reachable: keep the best model seen
        passing = max(results, key=lambda kk: (results[kk][0], -kk))
        tried = max((k for k, _ in tries), default=0)
        notes.append(
            f"mIoU drop limit {100 * max_drop:.2f} not reached with up to {tried} node(s) in float; "
            f"kept the best trial ({passing} node(s) in float)"
        )
    miou, path = results[passing]
    return FallbackResult(path, miou, ranked[:passing], not notes, history, sensitivity, notes)


def quantize_int8(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration_frames: Sequence[np.ndarray],
    options: Int8Options | None = None,
    nodes_to_exclude: Sequence[str] = (),
    auto_fallback_max_drop: float | None = None,
    eval_fn: Callable[[Path], float] | None = None,
    max_trials: int = 12,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
    **option_fields,
) -> QuantizeResult:
    """Static INT8 quantisation of an FP32 export with ONNX Runtime.

    `options` (or its fields as keywords: `types="S8S8"`, `per_channel=True` ...): `types` "U8S8" (uint8
    activations, int8 weights) or "S8S8" (with `symmetric_activations=True` and QDQ: what TensorRT's explicit
    quantisation wants). `eval_fn(model_path) -> mIoU` (e.g. `evaluation.onnx_eval_fn(data)`): FP32 and INT8 mIoU
    are reported, and with `auto_fallback_max_drop` (a fraction, 0.01 = one mIoU point) the most sensitive nodes
    are kept in float until the drop is within it (`float_fallback`).
    """
    import onnx

    t0 = time.perf_counter()
    say = log or (lambda _msg: None)
    options = replace(options or Int8Options(), **option_fields)
    src, out_path = Path(onnx_path), Path(out_path)
    proto = load_onnx_checked(src)
    meta = onnx_meta(proto, src)
    _check_inputs(src, meta, options, calibration_frames, auto_fallback_max_drop, eval_fn)
    batches = input_batches(calibration_frames, meta)
    name_nodes(proto)
    user_excluded = list(nodes_to_exclude)
    with tempfile.TemporaryDirectory(prefix="csst-int8-") as tmp:
        fp32_path = _prepared_fp32(proto, Path(tmp), options.pre_process)  # the reference: mIoU, agreement
        quant_proto, quant_src = _quantizer_source(proto, fp32_path, options, say)
        boundary = boundary_nodes(quant_proto, float_resize=options.float_resize)
        candidates = _fallback_candidates(src, quant_proto, boundary, nodes_to_exclude)
        quantizer = _Quantizer(quant_src, batches, meta.input_name, boundary, options)
        say(f"calibrating on {len(calibration_frames)} frame(s) and quantising")
        best = quantizer.run(user_excluded)
        fp32_miou = None
        result = FallbackResult(best, None, [], None, [], [], [])  # no float fallback: the first model
        if eval_fn is not None:
            say("evaluating FP32 and INT8")
            fp32_miou, result.miou = float(eval_fn(fp32_path)), float(eval_fn(best))
            result.history = [{"float_nodes": 0, "miou": result.miou, "drop": fp32_miou - result.miou}]
        if auto_fallback_max_drop is not None:
            result = float_fallback(
                quantizer, quant_proto, best, fp32_miou, result.miou, candidates, user_excluded, eval_fn,
                float(auto_fallback_max_drop), max_trials, threads, say,
            )  # fmt: skip
        agreement = argmax_agreement(fp32_path, result.path, batches, meta.input_name, meta, threads)
        qproto = onnx.load(str(result.path))
    excluded = user_excluded + result.float_nodes
    data = _with_quant_metadata(qproto, meta, options, len(calibration_frames), excluded, fp32_miou, result.miou)
    atomic_write_bytes(out_path, data)
    return QuantizeResult(
        path=out_path,
        meta=meta,
        seconds=time.perf_counter() - t0,
        quant_format=options.quant_format.upper(),
        types=options.types.upper(),
        per_channel=bool(options.per_channel),
        calibration_frames=len(calibration_frames),
        boundary_nodes=boundary,
        excluded_nodes=excluded,
        auto_excluded=result.float_nodes,
        fp32_miou=fp32_miou,
        int8_miou=result.miou,
        max_drop=auto_fallback_max_drop,
        target_met=result.target_met,
        agreement=agreement,
        history=result.history,
        sensitivity=[(n, float(v)) for n, v in result.sensitivity[:20]],
        size_bytes=len(data),
        notes=result.notes,
    )


def _fallback_candidates(src: Path, proto, boundary: list[str], nodes_to_exclude: Sequence[str]) -> list[str]:
    """The weighted nodes the float fallback may keep in float; an unknown excluded name is an error."""
    unknown = [n for n in nodes_to_exclude if n not in {node.name for node in proto.graph.node}]
    if unknown:
        raise ExportError(f"{src}: nodes_to_exclude names unknown node(s): {', '.join(unknown[:5])}")
    return [
        n.name
        for n in proto.graph.node
        if n.op_type in SENSITIVE_OPS and n.name not in boundary and n.name not in nodes_to_exclude
    ]


def _check_inputs(src: Path, meta: ModelMeta, options: Int8Options, frames, max_drop, eval_fn) -> None:
    if meta.precision != "fp32":
        raise ExportError(f"{src}: already quantised ({meta.precision}); quantise the FP32 export")
    options.check(src)
    if max_drop is not None and eval_fn is None:
        raise ExportError("the automatic float fallback measures mIoU: give an eval set (eval_fn / --data)")
    if not frames:
        raise ExportError(f"{src}: quantisation needs calibration frames (got none)")


def _prepared_fp32(proto, tmp: Path, pre_process: bool) -> Path:
    """The FP32 model the quantiser reads: shape-inferred, and with `pre_process` through onnxruntime's
    quant_pre_process (symbolic shape inference, ORT's graph optimisations: Conv+BN+ReLU fusion)."""
    import onnx

    path = tmp / "fp32.onnx"
    onnx.save(onnx.shape_inference.infer_shapes(proto), str(path))
    if pre_process:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        processed = tmp / "fp32_pre.onnx"
        quant_pre_process(str(path), str(processed), skip_symbolic_shape=False)
        path = processed
    return path


def _quantizer_source(proto, fp32_path: Path, options: Int8Options, say) -> tuple[object, Path]:
    """The graph the quantiser reads: the FP32 reference itself, or with `fold_normalization` a copy whose input
    normalisation is folded into the first convolution (where the graph has that shape)."""
    if not options.fold_normalization:
        return proto, fp32_path
    import copy

    from csst_edge.export.fold import fold_input_normalization

    folded_proto = copy.deepcopy(proto)
    folded = fold_input_normalization(folded_proto)
    if not folded:
        say("fold_normalization: the graph has no Mul / Add in front of its first convolution; nothing folded")
        return proto, fp32_path
    say(f"folded the input normalisation into {', '.join(folded)}")
    folded_dir = fp32_path.parent / "folded"
    folded_dir.mkdir(exist_ok=True)
    return folded_proto, _prepared_fp32(folded_proto, folded_dir, options.pre_process)


def _with_quant_metadata(qproto, meta: ModelMeta, options: Int8Options, frames: int, float_nodes, fp32, int8) -> bytes:
    meta.precision = "int8"
    meta.extra = {
        **meta.extra,
        "quantization": {
            "format": options.quant_format.upper(),
            "types": options.types.upper(),
            "per_channel": bool(options.per_channel),
            "calibrate_method": options.calibrate_method,
            "symmetric_activations": bool(options.symmetric_activations),
            "op_types_to_quantize": list(options.op_types_to_quantize or []),
            "pre_process": bool(options.pre_process),
            "fold_normalization": bool(options.fold_normalization),
            "float_resize": bool(options.float_resize),
            "calibration_frames": frames,
            "float_nodes": list(float_nodes),
            "fp32_miou": fp32,
            "int8_miou": int8,
        },
    }
    set_onnx_metadata(qproto, meta)
    return qproto.SerializeToString()


@dataclass
class LatencyComparison:
    fp32_ms: float
    int8_ms: float
    threads: int | None
    runs: int

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.int8_ms if self.int8_ms > 0 else float("inf")

    @property
    def verdict(self) -> str:
        if self.speedup >= 1.05:
            return f"INT8 is {self.speedup:.2f}x faster than FP32 here"
        if self.speedup > 0.95:
            return f"INT8 is NOT faster than FP32 here ({self.speedup:.2f}x): deploy the FP32 model on this CPU"
        return f"INT8 is SLOWER than FP32 here ({self.speedup:.2f}x): deploy the FP32 model on this CPU"

    def to_dict(self) -> dict:
        return {**asdict(self), "speedup": self.speedup, "verdict": self.verdict}


def compare_latency(
    fp32_path, int8_path, frames: Sequence[np.ndarray], threads: int | None = None, runs: int = 10, warmup: int = 2
) -> LatencyComparison:
    """Median latency of the FP32 and the INT8 model on this machine, same threads, interleaved (so a burst of
    other load hits both), on the first calibration frame: whether INT8 pays here, measured, not assumed."""
    fp32, int8 = _session(fp32_path, threads), _session(int8_path, threads)
    meta = onnx_meta(load_onnx_checked(Path(fp32_path)), Path(fp32_path))
    x = input_batches(list(frames)[:1], meta)[0]
    name = meta.input_name
    for _ in range(warmup):
        fp32.run(None, {name: x})
        int8.run(None, {name: x})
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(max(1, runs)):
        for key, session in (("fp32", fp32), ("int8", int8)):
            t = time.perf_counter()
            session.run(None, {name: x})
            times[key].append(1000 * (time.perf_counter() - t))
    return LatencyComparison(float(np.median(times["fp32"])), float(np.median(times["int8"])), threads, max(1, runs))
