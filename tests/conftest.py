from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "camvid"


@pytest.fixture
def camvid_root() -> Path:
    if not (CAMVID / "labels" / "train").is_dir():
        pytest.skip(f"real CamVid data not present at {CAMVID}")
    return CAMVID


def probs_meta(height: int, width: int, class_names: list[str]):
    """Runtime metadata of a 3-class probabilities model, for harvest folders written by the real harvester."""
    from csst_edge.runtime.model_meta import ModelMeta

    return ModelMeta(
        arch="fastscnn",
        num_classes=len(class_names),
        class_names=list(class_names),
        palette=[[0, 0, 0]] * len(class_names),
        mean=[0.5] * 3,
        std=[0.25] * 3,
        input_height=height,
        input_width=width,
        output_kind="probs",
        output_name="probs",
    )


def free_port() -> int:
    """A TCP port nobody listens on, for torchrun's rendezvous in multi-process tests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun(*csst_edge_args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node N -m csst_edge ARGS` with one thread per rank; the test asserts on its output.
    The 20-minute budget only stops a hung rendezvous: a busy 2-core machine finishes these in well under one."""
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    args += ["--master_port", str(free_port()), "-m", "csst_edge", *csst_edge_args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=1200)


def write_tiny_dataset(
    root: Path, splits=("train", "val"), n=4, size=(48, 64), num_classes=3, seed=0, image_ext=".png"
) -> Path:
    """A small folder-layout dataset whose labels are blocks of classes; returns the YAML path."""
    rng = np.random.default_rng(seed)
    h, w = size
    for split in splits:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            label = np.zeros((h, w), np.uint8)
            label[h // 2 :, :] = 1
            y, x = rng.integers(0, h - 12), rng.integers(0, w - 12)
            label[y : y + 10, x : x + 10] = num_classes - 1
            image = np.zeros((h, w, 3), np.uint8)
            for c in range(num_classes):
                image[label == c] = (40 + 80 * c, 200 - 60 * c, 90)
            image = np.clip(image.astype(int) + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / "images" / split / f"img{i:02d}{image_ext}"), image[..., ::-1])
            cv2.imwrite(str(root / "labels" / split / f"img{i:02d}.png"), label)
    cfg = {
        "name": "tiny",
        "root": ".",
        "layout": "folder",
        "splits": {s: s for s in splits},
        "classes": [f"c{i}" for i in range(num_classes)],
        "palette": [[i * 60, 100, 200 - i * 50] for i in range(num_classes)],
        "ignore_index": 255,
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def add_stray_id(dataset_yaml: Path, split: str = "train", name: str = "img01", value: int = 200) -> Path:
    """Paint a block of `value` (neither a class nor the ignore id) into one label of a tiny dataset; returns it."""
    path = dataset_yaml.parent / "labels" / split / f"{name}.png"
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    label[:4, :4] = value
    cv2.imwrite(str(path), label)
    return path


def set_id_remap(dataset_yaml: Path, remap: dict[int, int]) -> None:
    cfg = yaml.safe_load(dataset_yaml.read_text())
    cfg["id_remap"] = remap
    dataset_yaml.write_text(yaml.safe_dump(cfg))


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    return write_tiny_dataset(tmp_path / "tiny")


# ------------------------------------------------------------------------------------- S3 on 127.0.0.1 (moto)
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server (moto) on a free local port, for the whole session. The dummy credentials and the
    endpoint are set in os.environ (restored at the end), where s3fs / botocore look for them, and where Ray
    workers started later inherit them. Yields the endpoint URL."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    import logging
    import os

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL=endpoint)
    try:
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture
def s3_bucket(s3_server, request) -> str:
    """A fresh bucket on the local S3 server; returns its URL, s3://<bucket>."""
    import re

    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + f"-{free_port()}"
    fs = s3fs.S3FileSystem()
    fs.mkdir(name)
    return f"s3://{name}"
