"""ONNX export + verification, metadata, INT8 quantisation with float fallback, TensorRT (skipped without it),
and the torch-free runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_tiny_dataset

from csst_edge.errors import CheckpointError
from csst_edge.export.errors import ExportError
from csst_edge.export.frames import synthetic_frames
from csst_edge.export.onnx_export import export_onnx
from csst_edge.fileio import file_sha256
from csst_edge.runtime import load_backend, read_model_meta
from csst_edge.runtime.model_meta import ModelMeta, read_sidecar, write_sidecar
from csst_edge.train.checkpoint import save_checkpoint

H, W = 64, 128
MEAN, STD = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)
CLASSES = ["road", "car", "sky"]
PALETTE = [[128, 64, 128], [0, 0, 142], [70, 130, 180]]


def make_checkpoint(path: Path, arch: str = "fastscnn", seed: int = 0) -> Path:
    from csst_edge.models import create_model

    torch.manual_seed(seed)
    model = create_model(arch, num_classes=len(CLASSES)).eval()
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "arch": arch,
            "num_classes": len(CLASSES),
            "class_names": CLASSES,
            "palette": PALETTE,
            "mean": MEAN,
            "std": STD,
            "epoch": 3,
        },
    )
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def fastscnn_ckpt(workdir) -> Path:
    return make_checkpoint(workdir / "fastscnn.pt")


@pytest.fixture(scope="module")
def fastscnn_logits(workdir, fastscnn_ckpt) -> Path:
    export_onnx(fastscnn_ckpt, workdir / "fastscnn_logits.onnx", H, W, output="logits")
    return workdir / "fastscnn_logits.onnx"


def reference_logits(ckpt: Path, frame: np.ndarray) -> np.ndarray:
    """The training-side path: normalise in numpy (data.transforms.normalize), then the PyTorch model."""
    from csst_edge.data.transforms import normalize
    from csst_edge.train.checkpoint import model_from_checkpoint

    model, _ = model_from_checkpoint(ckpt)
    with torch.no_grad():
        return model(torch.from_numpy(normalize(frame, MEAN, STD))[None]).numpy()


def test_logits_export_matches_pytorch(workdir, fastscnn_ckpt, fastscnn_logits):
    frame = synthetic_frames(1, H, W, seed=5)[0]
    backend = load_backend(fastscnn_logits, threads=1)
    out = backend.infer(frame)
    ref = reference_logits(fastscnn_ckpt, frame)
    assert out.shape == ref.shape == (1, 3, H, W) and out.dtype == np.float32
    assert np.abs(out - ref).max() <= 1e-3 * max(1.0, np.abs(ref).max())
    assert (out.argmax(1) == ref.argmax(1)).mean() > 0.999


def test_labels_export_is_uint8_and_agrees(workdir, fastscnn_ckpt):
    result = export_onnx(fastscnn_ckpt, workdir / "fastscnn_labels.onnx", H, W, output="labels")
    report = result.verification
    assert report.passed and report.agreement >= 0.999 and report.max_abs_diff is None
    assert "agreement" in report.summary() and "limit" in report.summary()  # thresholds are stated
    frame = synthetic_frames(1, H, W, seed=6)[0]
    labels = load_backend(result.path, threads=1).infer(frame)
    assert labels.dtype == np.uint8 and labels.shape == (1, H, W)
    assert (labels == reference_logits(fastscnn_ckpt, frame).argmax(1)).mean() > 0.999


def test_metadata_round_trips(workdir, fastscnn_ckpt, fastscnn_logits):
    meta = read_model_meta(fastscnn_logits)
    assert meta.arch == "fastscnn" and meta.num_classes == 3 and meta.class_names == CLASSES
    assert meta.palette == PALETTE
    assert meta.mean == pytest.approx(MEAN) and meta.std == pytest.approx(STD)
    assert (meta.input_height, meta.input_width, meta.batch) == (H, W, 1)
    assert meta.input_layout == "nhwc" and meta.output_kind == "logits" and meta.precision == "fp32"
    assert meta.checkpoint_sha256 == file_sha256(fastscnn_ckpt, 64)
    assert meta.version and meta.opset == 17
    # the values are JSON strings in metadata_props, readable by onnxruntime alone
    import onnxruntime as ort

    props = (
        ort.InferenceSession(str(fastscnn_logits), providers=["CPUExecutionProvider"])
        .get_modelmeta()
        .custom_metadata_map
    )
    assert json.loads(props["csst_edge.class_names"]) == CLASSES
    assert ModelMeta.from_dict(meta.to_dict()) == meta
    engine = workdir / "fake.engine"
    engine.write_bytes(b"\0")
    write_sidecar(engine, meta)
    assert read_sidecar(engine) == meta == read_model_meta(engine)


def test_dynamic_export_runs_at_two_sizes(workdir, tmp_path):
    ckpt = make_checkpoint(tmp_path / "bisenet.pt", "bisenet_r18")
    result = export_onnx(ckpt, tmp_path / "dyn.onnx", H, W, dynamic=True, output="labels", verify_count=2)
    assert result.meta.dynamic and result.meta.input_height is None
    assert {tuple(s) for s in result.verification.sizes} == {(64, 128), (96, 192)}  # verified off the trace size too
    backend = load_backend(result.path, threads=1)
    assert backend.infer(np.zeros((1, 64, 128, 3), np.uint8)).shape == (1, 64, 128)
    assert backend.infer(np.zeros((2, 96, 160, 3), np.uint8)).shape == (2, 96, 160)


def test_dynamic_fastscnn_export_keeps_its_pyramid_pooling_exact_at_other_sizes(workdir, fastscnn_ckpt, tmp_path):
    # the pooling matrices are built from the input shape inside the graph, so a dynamic export stays exact
    result = export_onnx(fastscnn_ckpt, tmp_path / "dyn.onnx", H, W, dynamic=True, verify_count=1)
    assert {tuple(s) for s in result.verification.sizes} == {(64, 128), (96, 192)}
    assert result.verification.max_abs_diff < 1e-3 and result.verification.agreement > 0.999


def test_nchw_and_nhwc_inputs_agree(workdir, fastscnn_ckpt):
    nhwc = export_onnx(fastscnn_ckpt, workdir / "nhwc.onnx", H, W, input_layout="nhwc", output="labels", verify_count=1)
    nchw = export_onnx(fastscnn_ckpt, workdir / "nchw.onnx", H, W, input_layout="nchw", output="labels", verify_count=1)
    import onnx

    dims = lambda p: [d.dim_value for d in onnx.load(str(p)).graph.input[0].type.tensor_type.shape.dim]  # noqa: E731
    assert dims(nhwc.path) == [1, H, W, 3] and dims(nchw.path) == [1, 3, H, W]
    frame = synthetic_frames(1, H, W, seed=7)[0]
    a = load_backend(nhwc.path, threads=1).infer(frame)  # the backend transposes for the NCHW model itself
    b = load_backend(nchw.path, threads=1).infer(frame)
    assert np.array_equal(a, b)


def test_int8_options_and_the_latency_comparison(tmp_path, fastscnn_logits):
    """quant_pre_process, S8S8 per-channel and a restricted op set each give a working INT8 model that records
    them; the FP32-vs-INT8 latency comparison reports both medians and says plainly which is faster (no speed is
    asserted: that depends on the machine)."""
    import onnx

    from csst_edge.export.quantize import Int8Options, LatencyComparison, compare_latency, quantize_int8

    frames = [np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8) for i in range(2)]
    options = Int8Options(types="S8S8", per_channel=True, pre_process=True, op_types_to_quantize=("Conv",))
    result = quantize_int8(fastscnn_logits, tmp_path / "int8.onnx", frames, options)
    recorded = read_model_meta(result.path).extra["quantization"]
    assert recorded["pre_process"] and recorded["types"] == "S8S8" and recorded["op_types_to_quantize"] == ["Conv"]
    quantized = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert "QuantizeLinear" in quantized and "DequantizeLinear" in quantized
    comparison = compare_latency(fastscnn_logits, result.path, frames, threads=1, runs=3)
    assert comparison.fp32_ms > 0 and comparison.int8_ms > 0 and comparison.runs == 3
    assert comparison.speedup == pytest.approx(comparison.fp32_ms / comparison.int8_ms)
    assert set(comparison.to_dict()) >= {"fp32_ms", "int8_ms", "speedup", "verdict"}
    assert "faster" in LatencyComparison(10.0, 4.0, 1, 3).verdict
    assert "NOT faster" in LatencyComparison(10.0, 10.0, 1, 3).verdict
    assert (
        "SLOWER" in LatencyComparison(10.0, 12.0, 1, 3).verdict
        and "deploy the FP32" in LatencyComparison(10.0, 12.0, 1, 3).verdict
    )
    with pytest.raises(ExportError, match="types must be one of"):
        quantize_int8(fastscnn_logits, tmp_path / "bad.onnx", frames, types="U4S4")


def test_int8_reports_fp32_and_int8_miou(tmp_path, fastscnn_logits):
    from csst_edge.export.evaluation import onnx_eval_fn
    from csst_edge.export.frames import load_frames
    from csst_edge.export.quantize import quantize_int8

    data = write_tiny_dataset(tmp_path / "tiny", n=3, size=(H, W))
    frames = load_frames(data, 3, H, W, split="train")
    result = quantize_int8(fastscnn_logits, tmp_path / "int8.onnx", frames, eval_fn=onnx_eval_fn(data, threads=1))
    assert 0.0 <= result.fp32_miou <= 1.0 and 0.0 <= result.int8_miou <= 1.0
    assert "FP32" in result.summary() and "INT8" in result.summary()
    assert 0.0 <= result.agreement <= 1.0
    meta = read_model_meta(result.path)
    assert meta.precision == "int8" and meta.class_names == CLASSES
    assert meta.extra["quantization"]["int8_miou"] == pytest.approx(result.int8_miou)
    import onnx

    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "Cast" in ops
    out = load_backend(result.path, threads=1).infer(frames[0])
    assert out.shape == (1, 3, H, W)


def _normalised_conv_graph(pads: int, shift=(-2.1, -2.0, -1.8), two_convs: bool = False):
    """uint8 NHWC in → Cast → Transpose → Mul → Add → Conv(3→4, 3x3): the shape of every export's input
    (`two_convs`: a second conv reads the normalised input too and the outputs are added, as in BiSeNet)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array([0.017, 0.018, 0.019], np.float32).reshape(1, 3, 1, 1), "scale"),
        numpy_helper.from_array(np.array(shift, np.float32).reshape(1, 3, 1, 1), "shift"),
        numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "B"),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Transpose", ["f"], ["t"], perm=[0, 3, 1, 2], name="transpose"),
        helper.make_node("Mul", ["t", "scale"], ["m"], name="mul"),
        helper.make_node("Add", ["m", "shift"], ["a"], name="add"),
        helper.make_node("Conv", ["a", "W", "B"], ["y"], kernel_shape=[3, 3], pads=[pads] * 4, name="conv"),
    ]
    if two_convs:
        nodes[-1].output[0] = "y1"
        nodes += [
            helper.make_node("Conv", ["a", "W", "B"], ["y2"], kernel_shape=[3, 3], pads=[pads] * 4, name="conv2"),
            helper.make_node("Add", ["y1", "y2"], ["y"], name="sum"),
        ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 8, 10, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(proto, x):
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x})[0]


def test_folding_the_normalisation_into_the_first_conv_keeps_its_output():
    """Without padding the folded conv is the same function. With padding, the pad moves to a Pad of the uint8
    input with the mean colour's grey level: exact inside, and at the border off only by the channels' spread
    around that grey (exact when they share one level), far less than padding the raw input with black."""
    from csst_edge.export.fold import fold_input_normalization

    x = np.random.default_rng(1).integers(0, 256, (1, 8, 10, 3), dtype=np.uint8)
    proto = _normalised_conv_graph(0)
    before = _run(proto, x)
    assert fold_input_normalization(proto) == ["conv"]
    assert [n.op_type for n in proto.graph.node] == ["Cast", "Transpose", "Conv"]
    np.testing.assert_allclose(_run(proto, x), before, rtol=1e-4, atol=1e-3)

    proto = _normalised_conv_graph(1)
    before = _run(proto, x)
    assert fold_input_normalization(proto) == ["conv"]
    assert [n.op_type for n in proto.graph.node] == ["Pad", "Cast", "Transpose", "Conv"]
    after = _run(proto, x)
    assert after.shape == before.shape
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(after[inner], before[inner], rtol=1e-4, atol=1e-3)
    border_error = np.abs(after - before).max()
    # the raw zero level per channel is -shift/scale = 123.5, 111.1, 94.7: one grey of 110 is within 16 of each,
    # black is 95 to 124 away, so the error shrinks by more than 5x
    black_error = _black_border_error(before, x)
    assert 0.0 < border_error < black_error / 5

    proto = _normalised_conv_graph(1, two_convs=True)  # both convs pad alike: one Pad serves them
    before = _run(proto, x)
    assert fold_input_normalization(proto) == ["conv", "conv2"]
    assert [n.op_type for n in proto.graph.node] == ["Pad", "Cast", "Transpose", "Conv", "Conv", "Add"]
    np.testing.assert_allclose(_run(proto, x)[inner], before[inner], rtol=1e-4, atol=1e-3)

    shared = (-2.0 * 0.017 / 0.017, -2.0 * 0.018 / 0.017, -2.0 * 0.019 / 0.017)  # raw zero 117.6 in every channel
    proto = _normalised_conv_graph(1, shift=shared)
    before = _run(proto, x)
    fold_input_normalization(proto)
    np.testing.assert_allclose(_run(proto, x), before, rtol=1e-4, atol=0.2)

    no_norm = _normalised_conv_graph(0)
    del no_norm.graph.node[2:4]
    no_norm.graph.node[-1].input[0] = "t"
    assert fold_input_normalization(no_norm) == []  # nothing to fold: the graph is left as it was
    assert [n.op_type for n in no_norm.graph.node] == ["Cast", "Transpose", "Conv"]


def _black_border_error(before: np.ndarray, x: np.ndarray) -> float:
    """How far the conv's output moves when its input is padded with raw black instead of the mean colour:
    the normalised input padded with the normalised value of black, computed in numpy."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in _normalised_conv_graph(1).graph.initializer}
    normalised = x.astype(np.float32).transpose(0, 3, 1, 2) * inits["scale"] + inits["shift"]
    padded = np.broadcast_to(inits["shift"], (1, 3, x.shape[1] + 2, x.shape[2] + 2)).copy()
    padded[:, :, 1:-1, 1:-1] = normalised
    w, b = inits["W"], inits["B"]
    out = np.zeros_like(before)
    for dy in range(3):
        for dx in range(3):
            patch = padded[:, :, dy : dy + x.shape[1], dx : dx + x.shape[2]]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, dy, dx])
    out += b.reshape(1, -1, 1, 1)
    return float(np.abs(out - before).max())


def test_int8_with_the_normalisation_folded_has_no_float_mul_add_and_agrees(tmp_path, fastscnn_logits):
    import onnx

    from csst_edge.export.quantize import quantize_int8

    frames = synthetic_frames(2, H, W)
    plain = quantize_int8(fastscnn_logits, tmp_path / "plain.onnx", frames, fold_normalization=False)
    folded = quantize_int8(fastscnn_logits, tmp_path / "folded.onnx", frames)  # the default
    ops = [n.op_type for n in onnx.load(str(folded.path)).graph.node]
    plain_ops = [n.op_type for n in onnx.load(str(plain.path)).graph.node]
    assert ops.count("Mul") == plain_ops.count("Mul") - 1 and ops.count("Add") == plain_ops.count("Add") - 1
    assert read_model_meta(folded.path).extra["quantization"]["fold_normalization"] is True
    assert folded.agreement > 0.9  # the same labels as FP32 almost everywhere (border pixels may differ)


def _quantised_convs(path) -> int:
    import onnx

    graph = onnx.load(str(path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    return sum(
        1
        for n in graph.node
        if n.op_type == "Conv" and n.input[1] in producer and producer[n.input[1]].op_type == "DequantizeLinear"
    )


def test_auto_fallback_keeps_sensitive_nodes_in_float(tmp_path, fastscnn_logits):
    import onnx

    from csst_edge.export.quantize import quantize_int8

    # a stand-in metric: every quantised conv costs one point; the limit allows all but two of them
    convs = sum(1 for n in onnx.load(str(fastscnn_logits)).graph.node if n.op_type == "Conv")
    eval_fn = lambda path: 1.0 - 0.01 * _quantised_convs(path)  # noqa: E731
    frames = synthetic_frames(2, H, W)
    result = quantize_int8(
        fastscnn_logits,
        tmp_path / "fb.onnx",
        frames,
        eval_fn=eval_fn,
        auto_fallback_max_drop=0.01 * (convs - 2) + 0.005,
    )
    assert result.target_met and len(result.auto_excluded) == 2
    assert result.auto_excluded == [name for name, _ in result.sensitivity[:2]]
    assert _quantised_convs(result.path) == convs - 2
    assert result.drop <= result.max_drop and [h["float_nodes"] for h in result.history] == [0, 1, 2]
    # an impossible limit: every ranked node ends in float and the result says the target was missed
    missed = quantize_int8(fastscnn_logits, tmp_path / "fb2.onnx", frames, eval_fn=eval_fn, auto_fallback_max_drop=-1)
    assert missed.target_met is False and "NOT met" in missed.summary()


class FakeTrials:
    """`passes(k)` for the float-fallback search: True from `threshold` on (never when it is None), with a log."""

    def __init__(self, threshold: int | None):
        self.threshold, self.calls = threshold, []

    def __call__(self, k: int) -> bool:
        self.calls.append(k)
        return self.threshold is not None and k >= self.threshold


@pytest.mark.parametrize(
    "threshold, upper, budget, chosen, probes",
    [
        (1, 40, 11, 1, [1]),  # the first try passes: nothing to bisect
        (2, 40, 11, 2, [1, 2]),
        (3, 40, 11, 3, [1, 2, 4, 3]),
        (5, 40, 11, 5, [1, 2, 4, 8, 6, 5]),
        (13, 40, 11, 13, [1, 2, 4, 8, 16, 12, 14, 13]),
        (33, 40, 11, 33, [1, 2, 4, 8, 16, 32, 40, 36, 34, 33]),  # the last doubling is capped at upper
        (40, 40, 11, 40, [1, 2, 4, 8, 16, 32, 40, 36, 38, 39]),  # only every node in float passes
        (None, 40, 11, None, [1, 2, 4, 8, 16, 32, 40]),  # never passes: stops at upper
        (None, 1, 11, None, [1]),
        (1, 1, 11, 1, [1]),
        (None, 40, 3, None, [1, 2, 4]),  # never passes: stops when the budget is spent
        (13, 40, 6, 16, [1, 2, 4, 8, 16, 12]),  # budget spent mid-bisection: a passing k, not the smallest
        (13, 40, 0, None, []),
        (1, 0, 11, None, []),  # nothing to try
    ],
)
def test_smallest_passing_probes_doubling_then_bisection(threshold, upper, budget, chosen, probes):
    from csst_edge.export.quantize import smallest_passing

    passes = FakeTrials(threshold)
    value, tries = smallest_passing(passes, upper, budget)
    assert value == chosen and passes.calls == probes
    assert tries == [(k, threshold is not None and k >= threshold) for k in probes]
    assert len(tries) <= budget


def test_bad_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pt"):
        export_onnx(bad, tmp_path / "x.onnx", H, W)
    with pytest.raises(CheckpointError, match="missing.pt"):
        export_onnx(tmp_path / "missing.pt", tmp_path / "x.onnx", H, W)
    assert not (tmp_path / "x.onnx").exists()


def test_corrupt_onnx_gives_clear_errors(tmp_path, fastscnn_ckpt):
    from csst_edge.export.quantize import quantize_int8
    from csst_edge.export.verify import verify_onnx
    from csst_edge.runtime import BackendError, ModelMetaError

    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    frames = synthetic_frames(1, H, W)
    with pytest.raises(ExportError, match="corrupt.onnx"):
        verify_onnx(bad, fastscnn_ckpt, frames)
    with pytest.raises(ExportError, match="corrupt.onnx"):
        quantize_int8(bad, tmp_path / "q.onnx", frames)
    with pytest.raises((BackendError, ModelMetaError), match="corrupt.onnx"):
        load_backend(bad)


def test_tensorrt_build_without_tensorrt_is_a_clear_error(tmp_path, fastscnn_logits):
    from csst_edge.export.tensorrt_build import build_engine, tensorrt_available

    if tensorrt_available()[0]:
        pytest.skip("tensorrt is installed: the engine test below covers it")
    with pytest.raises(ExportError, match="tensorrt is not importable"):
        build_engine(fastscnn_logits, tmp_path / "m.engine")


def test_tensorrt_engine_matches_onnxruntime(tmp_path, fastscnn_logits):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (engines are built on the Jetson / a CUDA host)")
    from csst_edge.export.tensorrt_build import build_engine

    result = build_engine(fastscnn_logits, tmp_path / "m.engine", timing_cache=tmp_path / "trt.cache")
    assert result.sidecar.is_file() and (tmp_path / "trt.cache").is_file()
    frame = synthetic_frames(1, H, W, seed=8)[0]
    trt_out = load_backend(result.path).infer(frame)
    ort_out = load_backend(fastscnn_logits, providers=["cpu"]).infer(frame)
    assert (trt_out.argmax(1) == ort_out.argmax(1)).mean() > 0.99


def test_runtime_does_not_import_torch():
    code = (
        "import sys, csst_edge.runtime, csst_edge.runtime.backends, csst_edge.runtime.model_meta; "
        "bad = [m for m in ('torch', 'csst_edge.train', 'csst_edge.models', 'csst_edge.export') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_export_cli(tmp_path, fastscnn_ckpt):
    import typer
    from typer.testing import CliRunner

    from csst_edge.cli import export as export_cli
    from csst_edge.cli.common import ErrorHandlingGroup

    app = typer.Typer(cls=ErrorHandlingGroup)
    app.add_typer(export_cli.app, name="export")
    runner = CliRunner()
    out = tmp_path / "cli.onnx"
    r = runner.invoke(
        app, ["export", "onnx", str(fastscnn_ckpt), "-o", str(out), "--size", f"{H}x{W}", "--verify-count", "1"]
    )
    assert r.exit_code == 0, r.output
    assert out.is_file() and "verified" in r.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    r = runner.invoke(app, ["export", "onnx", str(bad), "--size", f"{H}x{W}"])
    assert r.exit_code == 1 and "bad.pt" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["export", "tensorrt", str(out)])
    from csst_edge.export.tensorrt_build import tensorrt_available

    if not tensorrt_available()[0]:
        assert r.exit_code == 1 and "tensorrt is not importable" in r.output


def test_openvino_backend_gives_the_labels_of_ort_fp32_and_runs_the_int8_model(tmp_path, fastscnn_logits):
    """The same ONNX file through OpenVINO: the argmax labels of ONNX Runtime FP32 (all but a few boundary pixels),
    and the QDQ INT8 model of `export int8` runs there as is."""
    pytest.importorskip("openvino", reason="openvino is not installed (it is in the dev extra)")
    from csst_edge.export.quantize import quantize_int8
    from csst_edge.runtime.backends import load_backend
    from csst_edge.runtime.openvino_backend import OpenVinoBackend

    frame = np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)
    ort_labels = load_backend(fastscnn_logits, providers="cpu", threads=1).infer(frame).argmax(1)
    ov = OpenVinoBackend(fastscnn_logits, threads=1)
    ov_logits = ov.infer(frame)
    assert ov_logits.shape == (1, len(CLASSES), H, W) and ov.meta.class_names == CLASSES
    assert (ov_logits.argmax(1) == ort_labels).mean() > 0.99
    int8 = quantize_int8(fastscnn_logits, tmp_path / "int8.onnx", [frame])
    assert OpenVinoBackend(int8.path, threads=1).infer(frame).shape == ov_logits.shape


def test_backend_openvino_is_chosen_by_name(fastscnn_logits):
    pytest.importorskip("openvino", reason="openvino is not installed (it is in the dev extra)")
    from csst_edge.runtime.backends import BackendError, backend_providers, load_backend

    assert backend_providers(fastscnn_logits, "openvino") == ["openvino"]
    assert load_backend(fastscnn_logits, providers=["openvino"], threads=1).name == "openvino"
    with pytest.raises(BackendError, match="on its own"):
        backend_providers(fastscnn_logits, "openvino,ort-cpu")


def test_cli_export_int8_reports_fp32_and_int8_latency_and_a_verdict(tmp_path, fastscnn_logits):
    """`export int8` times both models on this machine and prints both numbers and the verdict (no speed asserted)."""
    import re

    from typer.testing import CliRunner

    from csst_edge.cli.main import app

    data = write_tiny_dataset(tmp_path / "tiny", n=2, size=(H, W))
    out = tmp_path / "q.onnx"
    args = ["export", "int8", str(fastscnn_logits), "--calibration", str(data), "--count", "2", "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "--threads", "1", "--latency-runs", "2", "--pre-process", "-q"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert re.search(r"FP32 \d+\.\d ms, INT8 \d+\.\d ms", text) and "INT8 is" in text and out.is_file()
