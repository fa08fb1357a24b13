"""`pseudo-label --engine ray`: the local engine's label files byte for byte and its manifest records, over a local
path and over S3 (moto on 127.0.0.1); resume skips what the manifest has; a corrupt image is reported, not fatal.
One local Ray with 2 CPUs for the whole module (it takes 10-20 s to start)."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import free_port  # noqa: F401  (conftest's fixtures: s3_server, s3_bucket)
from test_pseudo import make_teacher, manifest, settings, write_images
from typer.testing import CliRunner

from csst_edge import storage
from csst_edge.errors import ConfigError
from csst_edge.pseudo import generate_pseudo_labels


@pytest.fixture(scope="module")
def ray_local(request):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    try:  # the S3 server first: Ray's workers inherit the endpoint and the dummy keys from this environment
        request.getfixturevalue("s3_server")
    except pytest.skip.Exception:
        pass
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def records_by_name(out) -> dict[str, dict]:
    files = storage.glob(storage.join(out, "manifest*.jsonl"))
    return {r["name"]: r for f in files for r in storage.read_jsonl(f)}


def label_bytes(out) -> dict[str, bytes]:
    labels = storage.join(out, "labels")
    return {storage.relative_to(p, labels): storage.read_bytes(p) for p in storage.find(labels)}


def test_missing_ray_is_one_error_naming_the_extra(monkeypatch):
    from csst_edge.pseudo import ray_engine

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"csst-edge\[ray\]"):
        ray_engine.import_ray()


def test_ray_engine_matches_the_local_engine_and_resumes(tmp_path, ray_local, monkeypatch):
    from csst_edge.cli.main import app
    from csst_edge.pseudo.ray_engine import generate_pseudo_labels_ray

    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them: the workers get them made absolute
    teacher = make_teacher(tmp_path / "teacher.pt")
    write_images(tmp_path / "imgs" / "seq", 6)
    (tmp_path / "imgs" / "seq" / "broken.png").write_bytes(b"not a png")
    s = settings(flip=True, topk=2, threads=1)  # the Ray CPU actors' default: one torch thread each
    generate_pseudo_labels("teacher.pt", ["imgs"], "local", s, progress=False)

    result = CliRunner().invoke(
        app, ["pseudo-label", "teacher.pt", "imgs", "-o", "ray", "--engine", "ray", "--flip", "--topk", "2", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "6 labelled" in result.output and "1 failed" in result.output
    assert label_bytes("ray") == label_bytes("local") and len(label_bytes("ray")) == 6
    soft = {p.name: p.read_bytes() for p in (tmp_path / "local" / "soft" / "seq").iterdir()}
    assert soft == {p.name: p.read_bytes() for p in (tmp_path / "ray" / "soft" / "seq").iterdir()}
    local, ray = records_by_name("local"), records_by_name("ray")
    assert local == ray  # the same records: same statistics, same input paths as given, same teacher hash
    assert ray["seq/broken"]["status"] == "error" and ray["seq/im00"]["image"] == "imgs/seq/im00.png"
    meta = {k: v for k, v in json.loads((tmp_path / "ray" / "meta.json").read_text()).items() if k != "settings"}
    assert meta == {
        k: v for k, v in json.loads((tmp_path / "local" / "meta.json").read_text()).items() if k != "settings"
    }

    # a kill after some items: their manifest lines exist, the others' do not; the rerun does only the others
    kept = [r for r in manifest(tmp_path / "ray") if r["status"] == "ok"][:4]
    (tmp_path / "ray" / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    before = {r["name"]: (tmp_path / "ray" / r["label"]).stat().st_mtime_ns for r in kept}
    summary = generate_pseudo_labels_ray(teacher, ["imgs"], "ray", s, progress=False)
    assert (summary.done_before, summary.labelled, summary.failed) == (4, 2, 1)
    assert all((tmp_path / "ray" / r["label"]).stat().st_mtime_ns == before[r["name"]] for r in kept)
    assert label_bytes("ray") == label_bytes("local")
    assert {n for n, r in records_by_name("ray").items() if r["status"] == "ok"} == {f"seq/im{i:02d}" for i in range(6)}


def test_ray_engine_from_bucket_to_bucket(tmp_path, ray_local, s3_bucket):
    from csst_edge.pseudo.ray_engine import generate_pseudo_labels_ray

    teacher = make_teacher(tmp_path / "teacher.pt")
    for path in write_images(tmp_path / "imgs", 5):
        storage.upload(path, f"{s3_bucket}/fleet/car1/harvest/images/{path.name}")
    storage.write_bytes(f"{s3_bucket}/fleet/car1/harvest/images/corrupt.jpg", b"\xff\xd8 not really")
    storage.upload(teacher, f"{s3_bucket}/models/teacher.pt")
    s = settings(flip=True, threads=1)
    generate_pseudo_labels(teacher, [tmp_path / "imgs"], tmp_path / "local", s, progress=False)

    out = f"{s3_bucket}/pseudo/r01"
    summary = generate_pseudo_labels_ray(
        f"{s3_bucket}/models/teacher.pt", [f"{s3_bucket}/fleet/car1/harvest"], out, s, progress=False
    )
    assert (summary.labelled, summary.failed) == (5, 1)
    remote = {k.removeprefix("images/"): v for k, v in label_bytes(out).items()}
    assert remote == label_bytes(tmp_path / "local")
    records = records_by_name(out)
    assert records["images/im00"]["image"] == f"{s3_bucket}/fleet/car1/harvest/images/im00.png"
    assert records["images/corrupt"]["status"] == "error" and "corrupt.jpg" in records["images/corrupt"]["image"]
    local = records_by_name(tmp_path / "local")
    for name, rec in local.items():  # the same statistics and teacher hash as the local engine's
        other = records[f"images/{name}"]
        assert {k: other[k] for k in ("class_histogram", "mean_confidence", "teacher_hash")} == {
            k: rec[k] for k in ("class_histogram", "mean_confidence", "teacher_hash")
        }
    # the manifest parts were folded into one manifest.jsonl, and a rerun has nothing left but the corrupt item
    assert [storage.name_of(p) for p in storage.glob(f"{out}/manifest*.jsonl")] == ["manifest.jsonl"]
    again = generate_pseudo_labels_ray(
        f"{s3_bucket}/models/teacher.pt", [f"{s3_bucket}/fleet/car1/harvest"], out, s, progress=False
    )
    assert (again.done_before, again.labelled, again.failed) == (5, 0, 1)


def test_engine_options_are_checked_before_anything_runs(tmp_path):
    from csst_edge.cli.main import app
    from csst_edge.pipeline.round import RoundSettings

    teacher = str(make_teacher(tmp_path / "t.pt"))
    runner = CliRunner()
    result = runner.invoke(app, ["pseudo-label", teacher, str(tmp_path), "-o", str(tmp_path / "o"), "--address", "x"])
    assert result.exit_code == 1 and "--engine ray" in result.output
    result = runner.invoke(app, ["pseudo-label", teacher, str(tmp_path), "-o", str(tmp_path / "o"), "--engine", "dask"])
    assert result.exit_code != 0 and "local or ray" in result.output
    with pytest.raises(ConfigError, match="--engine"):
        RoundSettings([tmp_path], teacher, teacher, "d", "v", tmp_path / "r", pseudo_engine="dask").check()
