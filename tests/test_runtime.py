"""The edge runtime: torch-free import, sources (file, folder, a failing live source), bounded-queue drops, the
harvester's scores / quota / crash safety, the loop and the `runtime run` CLI. Tiny: 64x128 frames, a few frames,
a randomly initialised Fast-SCNN."""

from __future__ import annotations

import functools
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from csst_edge.fileio import read_jsonl
from csst_edge.runtime.harvest import (
    Harvester,
    HarvestSettings,
    class_weights,
    entropy_uncertainty,
    frame_descriptor,
    load_class_frequencies,
    rarity_score,
    read_harvest_entries,
    sharpness,
)
from csst_edge.runtime.model_meta import ModelMeta
from csst_edge.runtime.postprocess import Prediction
from csst_edge.runtime.preprocess import fit_frame, labels_to_frame
from csst_edge.runtime.sources import (
    END,
    CaptureThread,
    Frame,
    FrameQueue,
    FrameSource,
    ImageFolderSource,
    SourceError,
    open_source,
)

ROOT = Path(__file__).resolve().parents[1]
H, W = 64, 128
CLASSES = ["road", "car", "sky"]
PALETTE = [[128, 64, 128], [0, 0, 142], [70, 130, 180]]


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runtime")


@pytest.fixture(scope="module")
def model_onnx(workdir) -> Path:
    """A random Fast-SCNN exported at 64x128 with probabilities out (what the harvester wants)."""
    import torch

    from csst_edge.export.onnx_export import export_onnx
    from csst_edge.models import create_model
    from csst_edge.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("fastscnn", len(CLASSES)).eval()
    save_checkpoint(
        workdir / "m.pt",
        {
            "model": model.state_dict(),
            "arch": "fastscnn",
            "num_classes": len(CLASSES),
            "class_names": CLASSES,
            "palette": PALETTE,
        },
    )
    export_onnx(workdir / "m.pt", workdir / "m.onnx", H, W, output="probs", verify_count=1)
    return workdir / "m.onnx"


@pytest.fixture(scope="module")
def video(workdir) -> Path:
    from csst_edge.data.synth import write_video

    return write_video(workdir / "drive.mp4", city="B", frames=12, height=H, width=W, fps=10, seed=1)


def textured(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """A sharp frame: blocks of colour with edges and fine texture."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    image = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int16)
    return np.clip(image + rng.integers(-25, 26, image.shape), 0, 255).astype(np.uint8)


def meta3() -> ModelMeta:
    return ModelMeta(
        arch="fastscnn",
        num_classes=3,
        class_names=CLASSES,
        palette=PALETTE,
        mean=[0.5] * 3,
        std=[0.25] * 3,
        input_height=H,
        input_width=W,
        output_kind="probs",
        output_name="probs",
    )


def uniform_probs() -> np.ndarray:
    return np.full((3, H, W), 1 / 3, np.float32)


def confident_probs(cls: int = 0) -> np.ndarray:
    p = np.full((3, H, W), 0.005, np.float32)
    p[cls] = 0.99
    return p


def frame_at(image: np.ndarray, index: int, t: float) -> Frame:
    return Frame(index, image, t, time.time(), str(index))


# ------------------------------------------------------------------------------------------------ torch-free
def test_runtime_imports_no_torch():
    modules = [
        "csst_edge.runtime",
        "csst_edge.runtime.sources",
        "csst_edge.runtime.harvest",
        "csst_edge.runtime.loop",
        "csst_edge.runtime.overlay",
        "csst_edge.runtime.preprocess",
        "csst_edge.runtime.postprocess",
        "csst_edge.runtime.sync",
        "csst_edge.cli.runtime",
    ]
    code = (
        f"import sys, importlib; [importlib.import_module(m) for m in {modules!r}]; "
        "bad = [m for m in ('torch', 'csst_edge.train', 'csst_edge.models', 'csst_edge.export') "
        "if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------------ geometry
def test_letterbox_round_trip():
    frame = textured(0, 90, 120)  # 4:3 into a 1:2 model
    fit = fit_frame(frame, H, W, "letterbox")
    assert fit.image.shape == (H, W, 3) and fit.content_height == H and fit.left > 0
    labels = np.zeros((H, W), np.uint8)
    labels[:, : W // 2] = 2  # includes part of the left padding
    back = labels_to_frame(labels, fit)
    assert back.shape == (90, 120)
    assert fit_frame(frame, H, W, "resize").image.shape == (H, W, 3)


def test_prediction_logits_and_probs_agree():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, H, W)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(0)
    meta = meta3()
    p_probs = Prediction(probs, meta, 2)
    meta.output_kind = "logits"
    p_logits = Prediction(logits, meta, 2)
    assert np.allclose(p_logits.small_probs(), p_probs.small_probs(), atol=1e-5)
    assert (p_logits.labels() == probs.argmax(0)).all()
    assert np.isclose(p_probs.class_shares().sum(), 1.0)


# ------------------------------------------------------------------------------------------------ sources
def test_file_source_reads_every_frame(video):
    source = open_source(str(video))
    assert not source.live and source.kind == "file"
    capture = CaptureThread(source, queue_size=2)
    capture.start()
    frames = []
    while (item := capture.queue.get(timeout=5)) is not END:
        time.sleep(0.01)  # a slow consumer: a file source must wait, never drop
        frames.append(item)
    capture.join(5)
    assert len(frames) == 12 and capture.stats.dropped == 0
    assert [f.index for f in frames] == list(range(12))
    assert frames[1].time == pytest.approx(0.1, abs=1e-3)  # media time from the video's fps


def test_folder_source_sorted_and_skips_corrupt(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), textured(i))
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "sub" / "g.jpg"), textured(9))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    source = open_source(str(tmp_path))
    assert isinstance(source, ImageFolderSource) and not source.live
    source.open()
    positions = []
    while (item := source.read()) is not None:
        positions.append(item[1])
    assert positions == ["f0.png", "f1.png", "f2.png", "sub/g.jpg"]
    assert source.unreadable == [str(tmp_path / "broken.jpg")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        open_source(str(tmp_path / "empty")).open()


def test_source_spec_parsing(tmp_path):
    assert open_source("0").kind == "camera" and open_source("0").live
    assert open_source("rtsp://10.0.0.5/stream").kind == "url"
    assert not open_source("rtsp://10.0.0.5/stream", live=False).live
    with pytest.raises(SourceError, match="not a file"):
        open_source(str(tmp_path / "missing.mp4"))
    if not __import__("csst_edge.runtime.sources", fromlist=["x"]).gstreamer_available():
        with pytest.raises(SourceError, match="without GStreamer"):
            open_source("csi://0?width=640&height=480")


def test_frame_queue_drop_accounting():
    q = FrameQueue(2)
    for i in range(5):
        assert q.put(i, drop_oldest=True)
    assert q.dropped == 3 and len(q) == 2
    assert [q.get(0), q.get(0)] == [3, 4]  # the freshest frames survive
    assert q.get(0.01) is None
    q.close()
    assert q.get(0) is END


class FlakyLiveSource(FrameSource):
    """A live source whose first `fail_opens` opens fail and whose stream breaks every `frames_per_open` frames."""

    live = True
    kind = "test"
    name = "flaky"

    def __init__(self, fail_opens: int = 2, frames_per_open: int = 5):
        self.fail_opens, self.frames_per_open = fail_opens, frames_per_open
        self.opens = self.attempts = self.left = 0

    def open(self):
        self.attempts += 1
        if self.attempts <= self.fail_opens:
            raise SourceError("flaky: connection refused")
        self.opens += 1
        self.left = self.frames_per_open

    def read(self):
        if self.left == 0:
            return None
        self.left -= 1
        return textured(self.left), str(self.left), None


def test_live_source_is_reopened_with_backoff_and_drops_when_behind():
    source = FlakyLiveSource(fail_opens=2, frames_per_open=5)
    capture = CaptureThread(source, queue_size=2, backoff_s=0.01, max_backoff_s=0.02)
    capture.start()
    consumed = 0
    deadline = time.monotonic() + 120  # a budget for a busy machine only: this takes well under a second
    while consumed < 8 and time.monotonic() < deadline:
        if capture.queue.get(timeout=0.5) not in (None, END):
            consumed += 1
            time.sleep(0.02)  # slower than the source: drops must be counted
    capture.stop()
    capture.join(5)
    s = capture.stats
    assert consumed == 8 and source.opens >= 2 and s.reconnects >= 1
    assert s.failures >= 3  # two refused opens + at least one broken stream
    assert s.frames == consumed + s.dropped + len(capture.queue)


def test_live_url_retried_until_server_starts(tmp_path, video):
    """A real HTTP source: refused while the server is down (retried with backoff), then streamed; the end of
    the stream counts as a failure of a live source and is reopened, so the run goes on."""
    import shutil

    shutil.copy(video, tmp_path / "cam.mp4")
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port = server.server_address[1]
    server.server_close()  # reserve a port, start later
    source = open_source(f"http://127.0.0.1:{port}/cam.mp4")
    assert source.live
    capture = CaptureThread(source, queue_size=4, backoff_s=0.05, max_backoff_s=0.1)
    capture.start()
    deadline = time.monotonic() + 120  # a budget for a busy machine only: this takes ~0.1 s
    while capture.stats.failures < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert capture.stats.failures >= 2 and capture.stats.frames == 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    got = 0
    deadline = time.monotonic() + 120
    try:
        while got < 20 and time.monotonic() < deadline:  # more than one pass of the 12-frame video
            if capture.queue.get(timeout=0.5) not in (None, END):
                got += 1
    finally:
        capture.stop()
        capture.join(5)
        server.shutdown()
    assert got == 20 and capture.stats.reconnects >= 2 and capture.error is None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_live_source_gives_up_after_max_retries(model_onnx):
    from csst_edge.runtime.loop import RuntimeSettings, run_runtime

    t0 = time.monotonic()
    with pytest.raises(SourceError, match="gave up after 3 attempts"):
        run_runtime(model_onnx, "rtsp://127.0.0.1:9/none", RuntimeSettings(max_retries=2, backoff_s=0.01, threads=1))
    assert time.monotonic() - t0 < 30


# ------------------------------------------------------------------------------------------------ harvester
def test_scores_on_constructed_frames():
    sharp = textured(1)
    assert sharpness(sharp) > 10 * sharpness(cv2.GaussianBlur(sharp, (0, 0), 3))
    assert entropy_uncertainty(uniform_probs()) == pytest.approx(1.0, abs=1e-5)
    assert entropy_uncertainty(confident_probs()) < 0.1
    d1, d2 = frame_descriptor(sharp), frame_descriptor(np.clip(sharp.astype(int) + 3, 0, 255).astype(np.uint8))
    assert float(d1 @ d2) > 0.99 and float(d1 @ frame_descriptor(textured(2))) < 0.5
    weights = class_weights(np.array([1000.0, 10.0, 100.0]))
    assert weights[0] == 0 and weights[1] == 1 and 0 < weights[2] < 1
    assert rarity_score(np.array([0.9, 0.1, 0.0]), weights, 0.01) == (1.0, 1)
    assert rarity_score(np.array([1.0, 0.0, 0.0]), weights, 0.01)[0] == 0.0


def test_harvester_keeps_sharp_uncertain_rejects_blurred_duplicate_and_confident(tmp_path):
    meta = meta3()
    settings = HarvestSettings(rate_per_min=0, min_score=0.5, vehicle="car1")
    h = Harvester(
        tmp_path / "h",
        meta,
        settings,
        model_file="m.onnx",
        model_hash="abc",
        class_frequencies=np.array([1000.0, 10.0, 100.0]),
    )
    sharp = textured(1)
    keep = h.consider(frame_at(sharp, 0, 0.0), sharp, Prediction(uniform_probs(), meta))
    assert keep.decision == "harvested" and keep.uncertainty > 0.99
    dup_image = np.clip(sharp.astype(int) + 2, 0, 255).astype(np.uint8)
    assert h.consider(frame_at(dup_image, 1, 1.0), dup_image, Prediction(uniform_probs(), meta)).decision == "duplicate"
    blurred = cv2.GaussianBlur(textured(3), (0, 0), 4)
    assert h.consider(frame_at(blurred, 2, 2.0), blurred, Prediction(uniform_probs(), meta)).decision == "blurred"
    other = textured(4)  # sharp and novel, but the model is sure it is all road: nothing to learn
    assert h.consider(frame_at(other, 3, 3.0), other, Prediction(confident_probs(0), meta)).decision == "low-score"
    rare = textured(5)  # sharp, confident, but it shows the rarest class
    assert h.consider(frame_at(rare, 4, 4.0), rare, Prediction(confident_probs(1), meta)).decision == "harvested"
    h.close()
    entries = read_harvest_entries(tmp_path / "h")
    assert len(entries) == 2 and all((tmp_path / "h" / e.image).is_file() for e in entries.values())
    record = read_jsonl(tmp_path / "h" / "manifest.jsonl")[0]
    assert (
        record["model_sha256"] == "abc"
        and record["vehicle"] == "car1"
        and set(record["scores"]) >= {"uncertainty", "rarity", "novelty", "sharpness"}
    )
    assert cv2.imread(str(tmp_path / "h" / record["image"])).shape == (H, W, 3)


def test_rate_limit_keeps_best_frame_of_each_window(tmp_path):
    meta = meta3()
    h = Harvester(
        tmp_path,
        meta,
        HarvestSettings(rate_per_min=60, min_score=0.0),  # one frame per second
        class_frequencies=np.ones(3),
    )  # no class is rare: uncertainty decides
    half = np.full((3, H, W), 0.2, np.float32)
    half[0] = 0.6
    probs = [confident_probs(0), confident_probs(0), uniform_probs(), confident_probs(0), half, confident_probs(0)]
    for i, p in enumerate(probs):  # 0.0 .. 1.25 s: two windows; frames 2 and 4 are the most uncertain of theirs
        h.consider(frame_at(textured(10 + i), i, i * 0.25), textured(10 + i), Prediction(p, meta))
    h.close()
    harvested = [r["frame"] for r in read_jsonl(tmp_path / "manifest.jsonl")]
    assert harvested == [2, 4] and h.counts["superseded"] >= 3


def test_quota_evicts_lowest_scoring_first(tmp_path):
    meta = meta3()
    sizes = []
    h = Harvester(
        tmp_path, meta, HarvestSettings(rate_per_min=0, min_score=0.0, quota_mb=1.0), class_frequencies=np.ones(3)
    )
    probe = cv2.imencode(".jpg", textured(20), [cv2.IMWRITE_JPEG_QUALITY, 92])[1].size
    h.quota_bytes = int(3.5 * probe)  # room for three frames
    levels = [0.9, 0.3, 0.6, 0.2, 0.8, 0.95]  # top-class probability: lower = more uncertain = higher score
    for i, top in enumerate(levels):
        p = np.full((3, H, W), (1 - top) / 2, np.float32)
        p[0] = top
        h.consider(frame_at(textured(20 + i), i, float(i)), textured(20 + i), Prediction(p, meta))
        sizes.append(h.total_bytes)
    assert max(sizes) <= h.quota_bytes
    kept = sorted(r.name for r in read_harvest_entries(tmp_path).values())
    kept_frames = sorted(int(n.rsplit("_", 1)[1]) for n in kept)
    assert kept_frames == [1, 2, 3]  # the three most uncertain frames
    events = read_jsonl(tmp_path / "manifest.jsonl")
    # frame 3 evicts frame 0; frames 4 and 5 score below every kept frame and are not written at all
    assert [e["event"] for e in events].count("evict") == h.counts["evicted"] == 1
    assert h.counts["quota"] == 2
    assert len(list((tmp_path / "images").iterdir())) == 3


def test_reopen_cleans_up_after_a_crash(tmp_path):
    meta = meta3()
    h = Harvester(tmp_path, meta, HarvestSettings(rate_per_min=0, min_score=0.0))
    h.consider(frame_at(textured(30), 0, 0.0), textured(30), Prediction(uniform_probs(), meta))
    h.close()
    orphan = "car_20261207T070108120Z_0000099.jpg"  # a name the harvester writes, its manifest line never written
    (tmp_path / "images" / orphan).write_bytes(b"written, but the manifest line never was")
    (tmp_path / "images" / f".{orphan}.k3j2h1.tmp").write_bytes(b"half")
    (tmp_path / "images" / "holiday.jpg").write_bytes(b"not a name the harvester writes: never deleted")
    (tmp_path / "manifest.jsonl").open("a").write('{"event": "harvest", "name": "torn')  # a torn last line
    h2 = Harvester(tmp_path, meta, HarvestSettings(rate_per_min=0))
    assert h2.recovered["orphans_deleted"] == 2 and len(h2.entries) == 1
    kept = next(iter(h2.entries.values())).image
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted([Path(kept).name, "holiday.jpg"])
    assert len(h2.history) == 1  # novelty remembers the frames harvested before the restart


def test_class_frequencies_from_centroid_index(tmp_path):
    from csst_edge.data.centroids import build_index

    label = np.zeros((H, W), np.uint8)
    label[:8, :8] = 1
    label[20:, :] = 2
    cv2.imwrite(str(tmp_path / "l.png"), label)
    build_index([tmp_path / "l.png"], num_classes=3, progress=False).save(tmp_path / "idx.npz")
    freq = load_class_frequencies(tmp_path / "idx.npz", 3)
    assert freq.tolist() == [float((label == c).sum()) for c in range(3)]
    (tmp_path / "f.json").write_text(json.dumps({"class_frequencies": [1, 2, 3]}))
    assert load_class_frequencies(tmp_path / "f.json", 3).tolist() == [1, 2, 3]


# ------------------------------------------------------------------------------------------------ the loop
def test_run_on_video_with_harvest_log_and_overlay(tmp_path, model_onnx, video):
    from csst_edge.pseudo.generate import expand_sources
    from csst_edge.runtime.loop import RuntimeSettings, run_runtime

    settings = RuntimeSettings(
        threads=1,
        harvest=tmp_path / "h",
        log=tmp_path / "run.jsonl",
        output_video=tmp_path / "overlay.mp4",
        harvest_settings=HarvestSettings(rate_per_min=120, min_score=0.0, vehicle="v"),
    )
    summary = run_runtime(model_onnx, str(video), settings)
    assert summary.frames == 12 and summary.stopped_by == "end" and summary.dropped == 0
    lines = read_jsonl(tmp_path / "run.jsonl")
    assert len(lines) == 12 and {"time", "latency_ms", "class_shares", "harvest"} <= set(lines[0])
    assert summary.harvest["frames"] >= 1 and (tmp_path / "h" / "last_run.json").is_file() is False  # log given
    assert json.loads((tmp_path / "run.summary.json").read_text())["frames"] == 12
    cap = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    cap.release()
    items = expand_sources([tmp_path / "h"])  # the harvest folder is pseudo-label input as it is
    assert len(items) == summary.harvest["frames"] and all(i.path.suffix == ".jpg" for i in items)


def test_run_closes_what_it_opened_when_it_fails(tmp_path, model_onnx, video, monkeypatch):
    """Setup that fails half-way closes what was opened; a closer that fails does not skip the others, and a
    clean run still writes its summary before raising that error."""
    from csst_edge.runtime.loop import FrameLog, RuntimeSettings, open_backend, run_runtime
    from csst_edge.runtime.sources import SourceError

    closed = []
    settings = RuntimeSettings(threads=1, log=tmp_path / "run.jsonl", harvest=tmp_path / "h")
    backend = open_backend(model_onnx, settings)
    monkeypatch.setattr(backend, "close", lambda: closed.append("backend"))
    with pytest.raises(SourceError, match="no-such-source"):
        run_runtime(model_onnx, str(tmp_path / "no-such-source"), settings, backend=backend)
    assert closed == ["backend"]

    def failing_close(self):
        closed.append("log")
        raise OSError("disk full")

    monkeypatch.setattr(FrameLog, "close", failing_close)
    monkeypatch.setattr(Harvester, "close", lambda self: closed.append("harvester"))
    closed.clear()
    with pytest.raises(OSError, match="disk full"):
        run_runtime(model_onnx, str(video), settings, backend=backend)
    assert sorted(closed) == ["backend", "harvester", "log"]
    assert json.loads((tmp_path / "run.summary.json").read_text())["frames"] == 12


def test_cli_run(tmp_path, model_onnx, video):
    import typer
    from typer.testing import CliRunner

    from csst_edge.cli import runtime as runtime_cli
    from csst_edge.cli.common import ErrorHandlingGroup

    app = typer.Typer(cls=ErrorHandlingGroup)
    app.add_typer(runtime_cli.app, name="runtime")
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "runtime",
            "run",
            str(model_onnx),
            "--source",
            str(video),
            "--threads",
            "1",
            "--harvest",
            str(tmp_path / "h"),
            "--harvest-rate",
            "0",
            "--max-frames",
            "5",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "5 frames" in r.output and "harvest" in r.output
    r = runner.invoke(app, ["runtime", "run", str(model_onnx), "--source", str(tmp_path / "nope.mp4")])
    assert r.exit_code == 1 and "nope.mp4" in r.output
    r = runner.invoke(app, ["runtime", "run", str(model_onnx), "--source", str(video), "--fit", "squash"])
    assert r.exit_code == 1 and "--fit" in r.output


def _start_cli(args: list[str]) -> subprocess.Popen:
    code = "from csst_edge.cli.runtime import app; app()"
    return subprocess.Popen(
        [sys.executable, "-c", code, "run", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _frames_folder(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"f{i:04d}.png"), textured(100 + i))
    return folder


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and len(path.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"runtime exited early: {proc.stdout.read()}")
        time.sleep(0.05)
    pytest.fail(f"{path} did not reach {n} lines")


def test_killed_mid_run_leaves_a_valid_manifest(tmp_path, model_onnx):
    from csst_edge.pseudo.generate import expand_sources

    frames = _frames_folder(tmp_path / "in", 400)
    harvest = tmp_path / "h"
    proc = _start_cli(
        [
            str(model_onnx),
            "-s",
            str(frames),
            "--threads",
            "1",
            "--harvest",
            str(harvest),
            "--harvest-rate",
            "0",
            "--min-score",
            "0",
            "-q",
        ]
    )
    try:
        _wait_for_lines(harvest / "manifest.jsonl", 5, proc)
    finally:
        proc.kill()  # SIGKILL: no cleanup code runs
        proc.wait(10)
    lines = (harvest / "manifest.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is complete JSON
    assert all(r["event"] == "harvest" for r in records)
    for r in records:
        assert cv2.imread(str(harvest / r["image"])) is not None  # every listed image is a whole JPEG
    reopened = Harvester(harvest, meta3(), HarvestSettings())
    assert len(reopened.entries) == len(records)
    assert {p.name for p in (harvest / "images").iterdir()} == {Path(r["image"]).name for r in records}
    assert len(expand_sources([harvest])) == len(records)


def test_sigterm_stops_cleanly_and_flushes(tmp_path, model_onnx):
    frames = _frames_folder(tmp_path / "in", 400)
    proc = _start_cli(
        [
            str(model_onnx),
            "-s",
            str(frames),
            "--threads",
            "1",
            "--log",
            str(tmp_path / "run.jsonl"),
            "--harvest",
            str(tmp_path / "h"),
            "--harvest-rate",
            "0",
            "--min-score",
            "0",
            "-q",
        ]
    )
    try:
        _wait_for_lines(tmp_path / "run.jsonl", 3, proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    summary = json.loads((tmp_path / "run.summary.json").read_text())
    assert summary["stopped_by"] == "signal" and 3 <= summary["frames"] < 400
    assert len(read_jsonl(tmp_path / "run.jsonl")) == summary["frames"]


def test_channel_argmax_is_numpys_argmax_ties_included():
    from csst_edge.runtime.postprocess import channel_argmax

    rng = np.random.default_rng(0)
    for shape in [(11, 17, 23), (2, 5, 5), (1, 3, 4)]:
        scores = rng.standard_normal(shape).astype(np.float32)
        labels = channel_argmax(scores)
        assert labels.dtype == np.uint8 and (labels == scores.argmax(axis=0)).all()
    tied = np.zeros((4, 2, 3), np.float32)
    tied[1] = tied[3] = 1.0  # classes 1 and 3 tie: the first wins, as with np.argmax
    assert (channel_argmax(tied) == 1).all()


def test_descriptor_history_is_a_ring_of_the_last_frames():
    from csst_edge.runtime.harvest import DescriptorHistory

    rng = np.random.default_rng(0)
    rows = rng.standard_normal((7, 512)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    history = DescriptorHistory(4)
    assert len(history) == 0 and history.max_similarity(rows[0]) == 0.0
    for r in rows:
        history.append(r)
    assert len(history) == 4
    assert history.max_similarity(rows[6]) == pytest.approx(1.0)  # the latest is remembered
    assert history.max_similarity(rows[0]) == pytest.approx(max(float(rows[0] @ r) for r in rows[3:]))
    assert len(DescriptorHistory(0)) == 0  # history=0: novelty remembers nothing
