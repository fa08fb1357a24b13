"""csst_edge.storage: one interface for paths, file://, memory:// and S3 (a moto server on 127.0.0.1); credentials
never reach a message; manifests on object stores in whole parts; the local cache."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from csst_edge import storage
from csst_edge.storage import ManifestWriter, StorageError


def test_names_and_redaction():
    assert storage.is_url("s3://b/k") and storage.is_url("file:///tmp/x") and storage.is_url("memory://x")
    assert not storage.is_url("runs/pseudo") and not storage.is_url("C:\\data") and not storage.is_url(Path("a"))
    assert storage.local_path("file:///tmp/x/y") == Path("/tmp/x/y")
    assert storage.local_path("runs/a") == Path("runs/a") and storage.local_path("s3://b/a") is None
    assert storage.redact("s3://KEY:SECRET@bucket/fleet/x.jpg") == "s3://bucket/fleet/x.jpg"
    assert storage.redact("https://u:p@host/a?X-Amz-Signature=abc&part=2&token=t") == "https://host/a?part=2"
    assert storage.redact("runs/pseudo") == "runs/pseudo"
    assert "SECRET" not in storage.redact_text("failed on s3://KEY:SECRET@bucket/a and gs://x:y@b")
    assert storage.join("s3://b/fleet/", "car1", "/images/a.jpg") == "s3://b/fleet/car1/images/a.jpg"
    assert storage.join("runs", "labels", "a.png") == Path("runs/labels/a.png")
    assert storage.name_of("s3://b/fleet/car1/") == "car1" and storage.parent_of("s3://b/fleet/car1") == "s3://b/fleet"
    assert storage.relative_to("s3://b/f/seq/a.jpg", "s3://b/f") == "seq/a.jpg"


def test_credentials_in_a_url_are_refused_without_repeating_them():
    with pytest.raises(StorageError) as e:
        storage.read_bytes("s3://AKIAEXAMPLE:topsecret@bucket/a.png")
    assert "topsecret" not in str(e.value) and "AKIAEXAMPLE" not in str(e.value)
    assert "s3://bucket/a.png" in str(e.value) and "AWS_ACCESS_KEY_ID" in str(e.value)


def test_a_missing_backend_names_the_extra():
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401

        pytest.skip("gcsfs is installed")
    except ImportError:
        pass
    with pytest.raises(StorageError, match=r'pip install "csst-edge\[gcs\]"'):
        storage.exists("gs://bucket/x")


@pytest.mark.parametrize("kind", ["path", "file-url", "memory"])
def test_read_write_list_on_every_kind_of_location(tmp_path, kind):
    base = {
        "path": str(tmp_path / "out"),
        "file-url": f"file://{tmp_path}/out",
        "memory": f"memory://csst-{uuid.uuid4().hex[:8]}/out",
    }[kind]
    storage.write_bytes(storage.join(base, "labels/a.png"), b"\x89PNG")
    storage.write_json(storage.join(base, "meta.json"), {"k": 1})
    storage.write_text(storage.join(base, "deep/er/b.txt"), "hello")
    assert storage.read_bytes(storage.join(base, "labels/a.png")) == b"\x89PNG"
    assert storage.read_json(storage.join(base, "meta.json")) == {"k": 1}
    assert storage.isdir(storage.join(base, "labels")) and storage.isfile(storage.join(base, "meta.json"))
    assert not storage.exists(storage.join(base, "nope.txt"))
    rel = sorted(storage.relative_to(p, base) for p in storage.find(base))
    assert rel == ["deep/er/b.txt", "labels/a.png", "meta.json"]
    detail = storage.find(base, detail=True)
    assert {v["size"] for v in detail.values()} == {4, 5, len(json.dumps({"k": 1}, indent=2)) + 1}
    assert [storage.name_of(p) for p in storage.glob(storage.join(base, "labels/*.png"))] == ["a.png"]
    storage.remove(storage.join(base, "labels/a.png"))
    storage.remove(storage.join(base, "labels/a.png"))  # twice: a missing file is not an error
    assert not storage.exists(storage.join(base, "labels/a.png"))
    with pytest.raises((StorageError, FileNotFoundError)):
        storage.read_bytes(storage.join(base, "missing.bin"))


def test_manifest_on_an_object_store_is_written_in_parts_then_compacted():
    folder = f"memory://csst-{uuid.uuid4().hex[:8]}/pseudo"
    storage.write_text(storage.join(folder, "manifest.jsonl"), '{"name": "old", "status": "ok"}\n')
    writer = ManifestWriter(folder, flush_every=2, flush_seconds=1e9)
    for i in range(5):
        writer.append({"name": f"n{i}", "status": "ok"})
    parts = [p for p in storage.find(folder) if "-part-" in str(p)]
    assert len(parts) == 2  # 4 lines flushed in two parts, the fifth still buffered
    # a reader that globs manifest*.jsonl (as every reader does) already sees the flushed lines
    seen = [r["name"] for p in storage.glob(storage.join(folder, "manifest*.jsonl")) for r in storage.read_jsonl(p)]
    assert sorted(seen) == ["n0", "n1", "n2", "n3", "old"]
    writer.close()
    assert [storage.name_of(p) for p in storage.find(folder)] == ["manifest.jsonl"]
    names = [r["name"] for r in storage.read_jsonl(storage.join(folder, "manifest.jsonl"))]
    assert names == ["old", "n0", "n1", "n2", "n3", "n4"]


def test_manifest_parts_of_a_killed_run_are_folded_in_by_the_next(tmp_path):
    folder = f"memory://csst-{uuid.uuid4().hex[:8]}/pseudo"
    killed = ManifestWriter(folder, flush_every=1)
    killed.append({"name": "a", "status": "ok"})  # flushed; the run dies before close()
    storage.write_text(storage.join(folder, "manifest-part-torn-00000.jsonl"), '{"name": "b", "status": "ok"}\n{"na')
    nxt = ManifestWriter(folder)
    nxt.append({"name": "c", "status": "ok"})
    nxt.close()
    names = [r["name"] for r in storage.read_jsonl(storage.join(folder, "manifest.jsonl"))]
    assert sorted(names) == ["a", "b", "c"]
    assert all("-part-" not in str(p) for p in storage.find(folder))


def test_mirror_fetches_only_new_or_changed_objects(tmp_path, monkeypatch):
    monkeypatch.setenv("CSST_CACHE", str(tmp_path / "cache"))
    folder = f"memory://csst-{uuid.uuid4().hex[:8]}/labels"
    storage.write_bytes(storage.join(folder, "a.png"), b"aaaa")
    storage.write_bytes(storage.join(folder, "sub/b.png"), b"bb")
    local = storage.mirror(folder)
    assert (local / "a.png").read_bytes() == b"aaaa" and (local / "sub/b.png").read_bytes() == b"bb"
    (local / "a.png").write_bytes(b"XXXX")  # a stale cache entry the listing still agrees with is kept ...
    storage.mirror(folder)
    assert (local / "a.png").read_bytes() == b"XXXX"
    storage.write_bytes(storage.join(folder, "a.png"), b"changed")  # ... but a changed object is fetched again
    storage.mirror(folder)
    assert (local / "a.png").read_bytes() == b"changed"
    assert storage.cache_files([tmp_path / "x.png"]) == [tmp_path / "x.png"]  # local paths are their own copies


def test_s3_round_trip_on_the_local_server(s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("CSST_CACHE", str(tmp_path / "cache"))
    base = f"{s3_bucket}/fleet/car1"
    storage.write_bytes(f"{base}/images/a.jpg", b"jpeg-bytes")
    storage.write_json(f"{base}/meta.json", {"vehicle": "car1"})
    assert storage.read_bytes(f"{base}/images/a.jpg") == b"jpeg-bytes"
    assert storage.isdir(base) and storage.isdir(f"{base}/images") and storage.isfile(f"{base}/meta.json")
    assert not storage.exists(f"{base}/images/zz.jpg")
    assert storage.find(base) == [f"{base}/images/a.jpg", f"{base}/meta.json"]
    assert storage.glob(f"{s3_bucket}/fleet/*/meta.json") == [f"{base}/meta.json"]
    detail = storage.find(base, detail=True)
    assert detail[f"{base}/images/a.jpg"]["size"] == 10 and detail[f"{base}/images/a.jpg"]["token"]
    local = storage.mirror(base)
    assert (local / "images/a.jpg").read_bytes() == b"jpeg-bytes"
    writer = ManifestWriter(base, flush_every=1)
    writer.append({"name": "a", "status": "ok"})
    writer.close()
    assert storage.read_jsonl(f"{base}/manifest.jsonl") == [{"name": "a", "status": "ok"}]
    with pytest.raises(StorageError, match="not found"):
        storage.read_bytes(f"{base}/missing.jpg")
