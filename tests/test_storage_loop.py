"""The loop over object storage (S3 on 127.0.0.1, moto): pseudo-label from a bucket into a bucket with the local
engine, the same labels as over local paths; resume there; a student trains from the pseudo folder in the bucket
(through the local cache); no credential reaches a manifest, meta.json or the console."""

from __future__ import annotations

import json

import numpy as np
from conftest import S3_ENV, write_tiny_dataset
from test_pseudo import make_teacher, settings, write_images
from typer.testing import CliRunner

from csst_edge import storage
from csst_edge.cli.main import app
from csst_edge.data.unlabelled import expand_sources
from csst_edge.pseudo import generate_pseudo_labels


def label_bytes(out) -> dict[str, bytes]:
    labels = storage.join(out, "labels")
    return {storage.relative_to(p, labels): storage.read_bytes(p) for p in storage.find(labels)}


def test_local_engine_bucket_to_bucket_matches_local_paths_and_resumes(tmp_path, s3_bucket, monkeypatch):
    monkeypatch.setenv("CSST_CACHE", str(tmp_path / "cache"))
    teacher = make_teacher(tmp_path / "teacher.pt")
    images = write_images(tmp_path / "imgs" / "seq", 4)
    (tmp_path / "imgs" / "seq" / "bad.png").write_bytes(b"broken")
    for path in [*images, tmp_path / "imgs" / "seq" / "bad.png"]:
        storage.upload(path, f"{s3_bucket}/unlabelled/seq/{path.name}")
    s = settings(topk=2)
    generate_pseudo_labels(teacher, [tmp_path / "imgs"], tmp_path / "local", s, progress=False)

    out = f"{s3_bucket}/pseudo/r01"
    result = CliRunner().invoke(
        app,
        ["pseudo-label", str(teacher), f"{s3_bucket}/unlabelled", "-o", out, "--topk", "2", "--workers", "0", "-q"],
    )
    assert result.exit_code == 0, result.output
    assert "4 labelled" in result.output and "1 failed" in result.output and out in result.output
    assert label_bytes(out) == label_bytes(tmp_path / "local")
    records = {r["name"]: r for r in storage.read_jsonl(f"{out}/manifest.jsonl")}
    assert records["seq/im01"]["image"] == f"{s3_bucket}/unlabelled/seq/im01.png"
    assert records["seq/bad"]["status"] == "error"
    assert storage.exists(f"{out}/soft/seq/im01.npz") and storage.exists(f"{out}/meta.json")
    assert [storage.name_of(p) for p in storage.glob(f"{out}/manifest*.jsonl")] == ["manifest.jsonl"]
    for secret in S3_ENV.values():  # the dummy keys are in the environment, never in what was written
        for path in (f"{out}/manifest.jsonl", f"{out}/meta.json"):
            assert secret not in storage.read_text(path)
    # a kill after two items (their lines made it to the bucket); the rerun does the other two
    kept = [json.dumps(records[n]) for n in ("seq/im00", "seq/im01")]
    storage.write_text(f"{out}/manifest.jsonl", "\n".join(kept) + "\n")
    summary = generate_pseudo_labels(teacher, [f"{s3_bucket}/unlabelled"], out, s, progress=False)
    assert (summary.done_before, summary.labelled, summary.failed) == (2, 2, 1)
    assert label_bytes(out) == label_bytes(tmp_path / "local")
    # a list file in the bucket names objects relative to its own folder, or by URL
    storage.write_text(
        f"{s3_bucket}/lists/two.txt", f"# two frames\nseq/im00.png\n{s3_bucket}/unlabelled/seq/im01.png\n"
    )
    storage.write_bytes(f"{s3_bucket}/lists/seq/im00.png", images[0].read_bytes())
    items = expand_sources([f"{s3_bucket}/lists/two.txt"])
    assert [(i.name, i.path) for i in items] == [
        ("seq/im00", f"{s3_bucket}/lists/seq/im00.png"),
        (f"{s3_bucket.removeprefix('s3://')}/unlabelled/seq/im01", f"{s3_bucket}/unlabelled/seq/im01.png"),
    ]


def test_a_student_trains_from_a_pseudo_folder_in_the_bucket(tmp_path, s3_bucket, monkeypatch):
    from csst_edge.data.label_source import resolve_label_set
    from csst_edge.data.pseudo_folder import read_pseudo_manifest
    from csst_edge.train.config import load_train_config
    from csst_edge.train.trainer import train

    monkeypatch.setenv("CSST_CACHE", str(tmp_path / "cache"))
    data = write_tiny_dataset(tmp_path / "tiny", n=3, size=(32, 48))
    for path in sorted((tmp_path / "tiny" / "images" / "val").iterdir()):
        storage.upload(path, f"{s3_bucket}/fleet/car1/images/{path.name}")
    pseudo = f"{s3_bucket}/pseudo/r01"
    generate_pseudo_labels(
        make_teacher(tmp_path / "teacher.pt"), [f"{s3_bucket}/fleet"], pseudo, settings(), progress=False
    )
    pairs, meta = read_pseudo_manifest(pseudo)
    assert len(pairs) == 3 and meta["class_names"] == ["c0", "c1", "c2"]
    cache = tmp_path / "cache"
    for name, image, label, _ in pairs:  # local copies in the cache, byte for byte the objects
        assert cache in image.parents and cache in label.parents
        assert label.read_bytes() == storage.read_bytes(f"{pseudo}/labels/{name}.png")
        assert image.read_bytes() == storage.read_bytes(f"{s3_bucket}/fleet/{name}.png")
    assert len(resolve_label_set(pseudo).files) == 3  # `data stats` / the round's index read it the same way

    out = tmp_path / "student"
    result = train(
        load_train_config(
            None,
            [
                f"train=[{{data: '{data}', split: train}}, {{pseudo: '{pseudo}'}}]",
                "model=fastscnn",
                "epochs=1",
                "batch_size=2",
                "samples_per_epoch=4",
                "crop=[32,32]",
                "workers=0",
                "log_every=1",
                f"out={out}",
            ],
        ),
        progress=False,
    )
    assert result.epochs_run == 1 and (out / "last.pt").is_file()
    steps = [r for r in storage.read_jsonl(out / "metrics.jsonl") if r["type"] == "step"]
    assert steps and all(np.isfinite(s["loss"]) for s in steps)


def test_unknown_bucket_is_one_clear_error(s3_server, tmp_path):
    result = CliRunner().invoke(
        app,
        ["pseudo-label", str(make_teacher(tmp_path / "t.pt")), "s3://no-such-bucket-here/x", "-o", str(tmp_path / "o")],
    )
    assert result.exit_code == 1
    assert "s3://no-such-bucket-here/x" in result.output and "Traceback" not in result.output


def test_credentials_in_a_source_url_are_refused_and_never_printed(tmp_path):
    url = "s3://AKIDEXAMPLE:wJalrXUtnFEMIsecret@bucket/unlabelled"
    result = CliRunner().invoke(
        app,
        ["pseudo-label", str(make_teacher(tmp_path / "t.pt")), url, "-o", str(tmp_path / "o")],
    )
    assert result.exit_code == 1 and "s3://bucket/unlabelled" in result.output
    assert "wJalrXUtnFEMIsecret" not in result.output and "AKIDEXAMPLE" not in result.output


def test_a_dataset_whose_root_is_a_bucket_is_mirrored_locally(tmp_path, s3_bucket, monkeypatch):
    import yaml

    from csst_edge.data.dataset import list_samples, load_dataset_config

    monkeypatch.setenv("CSST_CACHE", str(tmp_path / "cache"))
    data = write_tiny_dataset(tmp_path / "tiny", n=2, size=(32, 48))
    for path in storage.find(tmp_path / "tiny"):
        if path.suffix == ".png":
            storage.upload(path, f"{s3_bucket}/datasets/tiny/{path.relative_to(tmp_path / 'tiny').as_posix()}")
    cfg = yaml.safe_load(data.read_text())
    (tmp_path / "remote.yaml").write_text(yaml.safe_dump({**cfg, "root": f"{s3_bucket}/datasets/tiny"}))
    ds = load_dataset_config(tmp_path / "remote.yaml")
    samples = list_samples(ds, "train")
    assert len(samples) == 2 and (tmp_path / "cache") in ds.root.parents
    assert [s.label.read_bytes() for s in samples] == [
        (tmp_path / "tiny" / "labels" / "train" / f"img{i:02d}.png").read_bytes() for i in range(2)
    ]
