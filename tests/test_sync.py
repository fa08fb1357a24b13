"""`csst-edge runtime sync`: finished harvest items to a bucket, against a local file:// destination, memory:// and
an S3 API (moto's server on 127.0.0.1, dummy credentials). Idempotent (a second run uploads nothing), resumable
after SIGKILL mid-upload and after a dropped link (nothing lost, nothing duplicated, no partial object under a
final key), never a half-written file, local items deleted only with --delete-local after confirmation."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port, probs_meta
from typer.testing import CliRunner

from csst_edge.fileio import read_jsonl
from csst_edge.runtime.harvest import Harvester, HarvestSettings, read_harvest_records
from csst_edge.runtime.postprocess import Prediction
from csst_edge.runtime.sources import Frame
from csst_edge.runtime.sync import (
    SyncError,
    SyncSettings,
    TokenBucket,
    _display_url,
    parse_storage_options,
    read_synced_records,
    sync_harvest,
)

ROOT = Path(__file__).resolve().parents[1]
H, W = 96, 128
BUCKET = "fleet"
KEY, SECRET = "AKIDUMMYKEYFORTESTS", "dummy-secret-never-printed"


def make_harvest(folder: Path, n: int = 4, vehicle: str = "car1", seed: int = 0, first: int = 0) -> Path:
    """A harvest folder of `n` noise frames (~30 KB JPEGs each), written by the real harvester."""
    meta = probs_meta(H, W, ["a", "b", "c"])
    settings = HarvestSettings(
        rate_per_min=0, min_score=0.0, min_sharpness=0.0, duplicate_similarity=1.0, vehicle=vehicle
    )
    h = Harvester(folder, meta, settings, class_frequencies=np.ones(3))
    rng = np.random.default_rng(seed)
    for i in range(first, first + n):
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        h.consider(Frame(i, image, float(i), 1.7e9 + i, f"{i}"), image, Prediction(np.full((3, H, W), 1 / 3), meta))
    h.close()
    assert len(read_harvest_records(folder)) == n
    return folder


def local_items(folder: Path) -> dict[str, str]:
    """name -> sha256 of the finished local items."""
    return {
        r["name"]: hashlib.sha256((folder / r["image"]).read_bytes()).hexdigest() for r in read_harvest_records(folder)
    }


def check_remote(fs, base: str, expected: dict[str, str]) -> None:
    """Every expected item is there exactly once (image named by its hash, the row naming it), nothing else is,
    and no upload is left in flight."""
    fs.invalidate_cache()
    files = {p[len(base) + 1 :]: p for p in fs.find(base)}
    images = {k for k in files if k.startswith("images/")}
    rows = {k for k in files if k.startswith("manifest/")}
    assert images == {f"images/{sha}.jpg" for sha in expected.values()}, sorted(files)
    assert rows == {f"manifest/{sha}.json" for sha in expected.values()}, sorted(files)
    assert set(files) == images | rows, sorted(files)  # no .partial leftovers
    for sha in expected.values():
        assert hashlib.sha256(fs.cat_file(files[f"images/{sha}.jpg"])).hexdigest() == sha
    named = {json.loads(fs.cat_file(files[r]))["name"]: json.loads(fs.cat_file(files[r]))["sha256"] for r in rows}
    assert named == expected


def no_partial_final_objects(fs, base: str) -> None:
    """Mid-sync: whatever sits under a final key is complete (its content hashes to its name)."""
    fs.invalidate_cache()
    for path in fs.find(base):
        rel = path[len(base) + 1 :]
        if rel.startswith("images/"):
            assert hashlib.sha256(fs.cat_file(path)).hexdigest() == Path(rel).stem
        elif rel.startswith("manifest/"):
            json.loads(fs.cat_file(path))  # a whole row


# ------------------------------------------------------------------------------------------ the S3 server
@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on a free local port with dummy credentials in the environment; a bucket `fleet`."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    import boto3

    port = free_port()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1")
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def s3fs_for(endpoint: str):
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)


# ------------------------------------------------------------------------------------------ pieces
def test_token_bucket_caps_the_rate():
    now = [0.0]

    def sleep(dt):
        now[0] += dt

    bucket = TokenBucket(rate=1000.0, burst=100, clock=lambda: now[0], sleep=sleep)
    for _ in range(50):
        bucket.consume(100)  # 5000 bytes at 1000 B/s
    assert now[0] == pytest.approx(5.0)
    now[0] += 60  # idle for a minute: at most one burst goes through without waiting
    start = now[0]
    bucket.consume(100)
    bucket.consume(100)
    assert now[0] - start == pytest.approx(0.1)


def test_urls_are_shown_without_credentials():
    url = "s3://AKIDSECRETUSER:topsecretpw@bucket/pre?X-Amz-Signature=abcdef123&region=eu"
    shown = _display_url(url)
    assert "AKIDSECRETUSER" not in shown and "topsecretpw" not in shown and "abcdef123" not in shown
    assert shown == "s3://bucket/pre?region=eu"
    assert _display_url("s3://b/p/oops-hunter2-xx", {"secret": "hunter2-xx"}) == "s3://b/p/oops-***"


def test_storage_options_parse():
    opts = parse_storage_options(
        ["endpoint_url=http://h:9000", "anon=false", "client_kwargs.region_name=eu", "secret=123"]
    )
    assert opts == {
        "endpoint_url": "http://h:9000",
        "anon": False,
        "client_kwargs": {"region_name": "eu"},
        "secret": "123",
    }
    with pytest.raises(SyncError, match="KEY=VALUE"):
        parse_storage_options(["novalue"])


# ------------------------------------------------------------------------------------------ idempotent
def test_file_destination_is_idempotent_and_rebuilds_lost_state(tmp_path):
    harvest = make_harvest(tmp_path / "h", 3)
    expected = local_items(harvest)
    dest = (tmp_path / "bucket").as_uri()
    first = sync_harvest(harvest, dest, SyncSettings(vehicle="car1"))
    assert (first.items, first.uploaded, first.already_remote) == (3, 3, 0) and first.verified_by == ["read-back"]
    import fsspec

    fs = fsspec.filesystem("file")
    check_remote(fs, str(tmp_path / "bucket" / "car1"), expected)
    again = sync_harvest(harvest, dest, SyncSettings(vehicle="car1"))
    assert (again.uploaded, again.already_remote, again.bytes_uploaded) == (0, 3, 0)
    for state in (harvest / ".sync").glob("state-*.json"):
        state.unlink()  # a lost state file: the listing (with hashes read back) stands in, still no upload
    rebuilt = sync_harvest(harvest, dest, SyncSettings(vehicle="car1"))
    assert (rebuilt.uploaded, rebuilt.already_remote, rebuilt.bytes_uploaded) == (0, 3, 0)
    assert local_items(harvest) == expected  # nothing deleted without --delete-local
    # a remote object of the right size but the wrong content is not taken for the item: it is uploaded again
    victim = tmp_path / "bucket" / "car1" / "images" / f"{next(iter(expected.values()))}.jpg"
    victim.write_bytes(b"\0" * victim.stat().st_size)
    for state in (harvest / ".sync").glob("state-*.json"):
        state.unlink()
    repaired = sync_harvest(harvest, dest, SyncSettings(vehicle="car1"))
    assert (repaired.uploaded, repaired.already_remote) == (1, 2)
    check_remote(fs, str(tmp_path / "bucket" / "car1"), expected)
    rows = read_synced_records(dest, "car1")
    assert sorted(r["name"] for r in rows) == sorted(expected)
    assert all(r["url"].startswith("file://") and r["url"].endswith(f"{r['sha256']}.jpg") for r in rows)


def test_s3_is_idempotent_and_deletes_only_confirmed_items(tmp_path, s3):
    harvest = make_harvest(tmp_path / "h", 4, seed=1)
    expected = local_items(harvest)
    opts = {"endpoint_url": s3}
    dest = f"s3://{BUCKET}/idem"
    first = sync_harvest(harvest, dest, SyncSettings(vehicle="car1", storage_options=opts))
    assert first.uploaded == 4 and first.verified_by == ["etag"]  # moto's ETag is the MD5 of a single PUT
    fs = s3fs_for(s3)
    check_remote(fs, f"{BUCKET}/idem/car1", expected)
    again = sync_harvest(harvest, dest, SyncSettings(vehicle="car1", storage_options=opts))
    assert (again.uploaded, again.bytes_uploaded, again.already_remote) == (0, 0, 4)

    # one more frame arrives; --delete-local uploads it and then deletes every confirmed item, logging evictions
    extra = make_harvest(tmp_path / "h2", 1, seed=2, first=10)
    record = read_harvest_records(extra)[0]
    (harvest / record["image"]).write_bytes((extra / record["image"]).read_bytes())
    with open(harvest / "manifest.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    expected = {**expected, record["name"]: hashlib.sha256((extra / record["image"]).read_bytes()).hexdigest()}
    deleting = sync_harvest(harvest, dest, SyncSettings(vehicle="car1", storage_options=opts, delete_local=True))
    assert (deleting.uploaded, deleting.already_remote, deleting.deleted_local) == (1, 4, 5)
    check_remote(fs, f"{BUCKET}/idem/car1", expected)
    assert not list((harvest / "images").iterdir()) and read_harvest_records(harvest) == []
    evictions = [r for r in read_jsonl(harvest / "manifest.jsonl") if r["event"] == "evict"]
    assert sorted(r["name"] for r in evictions) == sorted(expected) and {r["reason"] for r in evictions} == {"synced"}


def test_unfinished_items_are_never_uploaded(tmp_path):
    harvest = make_harvest(tmp_path / "h", 2)
    expected = local_items(harvest)
    images = harvest / "images"
    (images / ".car1_x.jpg.tmp").write_bytes(b"\xff\xd8half a jpeg")  # a write in progress
    (images / "car1_no_row_yet.jpg").write_bytes(b"\xff\xd8written, manifest line not yet appended")
    with open(harvest / "manifest.jsonl", "a") as f:
        f.write('{"event": "harvest", "name": "torn", "image": "images/car1_no_row_yet.jpg", "by')  # torn line
    shrunk = read_harvest_records(harvest)[0]
    summary = sync_harvest(harvest, "memory://unfinished", SyncSettings(vehicle="car1"))
    assert summary.items == 2 and summary.uploaded == 2
    import fsspec

    check_remote(fsspec.filesystem("memory"), "/unfinished/car1", expected)
    # a file that is not the size its row records (being replaced under us) is skipped, not uploaded
    (harvest / shrunk["image"]).write_bytes(b"\xff\xd8truncated")
    later = sync_harvest(harvest, "memory://unfinished2", SyncSettings(vehicle="car1"))
    assert later.skipped == 1 and later.uploaded == 1


def test_two_items_with_the_same_bytes_are_stored_once_and_stay_idempotent(tmp_path):
    harvest = make_harvest(tmp_path / "h", 2)
    first = read_harvest_records(harvest)[0]
    twin = {**first, "name": first["name"] + "-twin", "image": first["image"].replace(".jpg", "-twin.jpg")}
    (harvest / twin["image"]).write_bytes((harvest / first["image"]).read_bytes())
    with open(harvest / "manifest.jsonl", "a") as f:
        f.write(json.dumps(twin) + "\n")
    dest = "memory://twins"
    one = sync_harvest(harvest, dest, SyncSettings(vehicle="car1"))
    assert one.items == 3 and (one.uploaded, one.already_remote) == (2, 1)
    for _ in range(2):  # the twin neither overwrites its sibling's row nor is re-sent, run after run
        again = sync_harvest(harvest, dest, SyncSettings(vehicle="car1"))
        assert (again.uploaded, again.bytes_uploaded, again.already_remote) == (0, 0, 3)
    import fsspec

    fs = fsspec.filesystem("memory")
    assert len(fs.find("/twins/car1/images")) == len(fs.find("/twins/car1/manifest")) == 2
    assert {r["name"] for r in read_synced_records(dest, "car1")} == {
        r["name"] for r in read_harvest_records(harvest)[:2]
    }


# ------------------------------------------------------------------------------------------ resumable
def test_dropped_link_stops_then_resumes(tmp_path, monkeypatch):
    from fsspec.implementations.memory import MemoryFileSystem

    harvest = make_harvest(tmp_path / "h", 4, seed=3)
    expected = local_items(harvest)
    real_mv, calls = MemoryFileSystem.mv, [0]

    def flaky_mv(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] >= 4:  # the link drops after one and a half items
            raise ConnectionError("link down")
        return real_mv(self, *args, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "mv", flaky_mv)
    with pytest.raises(SyncError, match="failed after 2 attempts.*link down.*run the sync again"):
        sync_harvest(harvest, "memory://dropped", SyncSettings(vehicle="car1", retries=1, backoff_s=0.01))
    fs = MemoryFileSystem()
    no_partial_final_objects(fs, "/dropped/car1")
    monkeypatch.setattr(MemoryFileSystem, "mv", real_mv)
    resumed = sync_harvest(harvest, "memory://dropped", SyncSettings(vehicle="car1"))
    assert resumed.uploaded == 3 and resumed.already_remote == 1  # the first item was confirmed before the drop
    check_remote(fs, "/dropped/car1", expected)


def _start_sync(args: list[str], env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "csst_edge", "runtime", "sync", *args, "-q"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_killed_mid_upload_resumes_with_nothing_lost_or_duplicated(tmp_path, backend, request):
    harvest = make_harvest(tmp_path / "h", 4, seed=4)
    expected = local_items(harvest)
    if backend == "s3":
        endpoint = request.getfixturevalue("s3")
        fs, base, dest = s3fs_for(endpoint), f"{BUCKET}/killed/car1", f"s3://{BUCKET}/killed"
        extra = ["-O", f"endpoint_url={endpoint}"]
    else:
        import fsspec

        fs, base, dest = fsspec.filesystem("file"), str(tmp_path / "dest" / "car1"), (tmp_path / "dest").as_uri()
        extra = []
    # ~12 KB per JPEG at 80 kbit/s (10 KB/s): each image takes over a second, so the kill lands mid-upload
    proc = _start_sync([str(harvest), dest, "--vehicle", "car1", "--max-kbps", "80", *extra])
    try:
        deadline = time.monotonic() + 600  # the first upload, however busy the machine
        while time.monotonic() < deadline and proc.poll() is None:
            fs.invalidate_cache()
            found = fs.find(base, detail=True) if fs.exists(base) else {}
            one_done = any("/manifest/" in p for p in found)
            # on a file system the upload in flight is visible (s3fs sends an object in one PUT at its end)
            in_flight = backend == "s3" or any("/.partial/" in p and i["size"] > 0 for p, i in found.items())
            if one_done and in_flight:
                break  # the first item is complete remotely, the second one is on its way
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read()
        if backend == "s3":
            time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)  # no cleanup code runs
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    no_partial_final_objects(fs, base)
    fs.invalidate_cache()
    done = {p for p in fs.find(base) if "/manifest/" in p}
    assert 1 <= len(done) < 4  # killed part-way
    assert local_items(harvest) == expected  # local items untouched

    rerun = _start_sync([str(harvest), dest, "--vehicle", "car1", *extra])
    out, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, out
    assert "already there" in out and KEY not in out and SECRET not in out
    if backend == "file":
        assert "removed 1 partial upload" in out, out  # the half-sent temp object of the killed run
    check_remote(fs, base, expected)
    assert local_items(harvest) == expected

    again = _start_sync([str(harvest), dest, "--vehicle", "car1", "--delete-local", *extra])
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0 and "uploaded 0 " in out and "deleted locally 4" in out, out
    check_remote(fs, base, expected)
    assert read_harvest_records(harvest) == [] and not list((harvest / "images").iterdir())


def test_sigterm_stops_and_saves_what_was_confirmed(tmp_path):
    harvest = make_harvest(tmp_path / "h", 4, seed=6)
    proc = _start_sync([str(harvest), (tmp_path / "dest").as_uri(), "--vehicle", "car1", "--max-kbps", "80"])
    try:
        deadline = time.monotonic() + 600  # the first upload, however busy the machine
        while time.monotonic() < deadline and proc.poll() is None:
            if list((tmp_path / "dest" / "car1").glob("manifest/*.json")):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "run the same command to resume" in out, out
    (state,) = (harvest / ".sync").glob("state-*.json")
    assert 1 <= len(json.loads(state.read_text())["items"]) < 4
    assert not list((tmp_path / "dest" / "car1" / ".partial").glob("*"))  # the upload in flight was removed


# ------------------------------------------------------------------------------------------ CLI
def test_cli_sync_summary_and_errors_keep_credentials_out(tmp_path, s3):
    from csst_edge.cli.main import app

    harvest = make_harvest(tmp_path / "h", 2, seed=5)
    creds = ["-O", f"endpoint_url={s3}", "-O", f"key={KEY}", "-O", f"secret={SECRET}"]
    runner = CliRunner()
    result = runner.invoke(app, ["runtime", "sync", str(harvest), f"s3://{BUCKET}/cli", "--vehicle", "car9", *creds])
    assert result.exit_code == 0, result.output
    assert f"s3://{BUCKET}/cli/car9" in result.output and "uploaded 2" in result.output
    assert KEY not in result.output and SECRET not in result.output
    # the vehicle comes from the harvest's meta.json when not given
    result = runner.invoke(app, ["runtime", "sync", str(harvest), f"s3://{BUCKET}/cli", *creds])
    assert result.exit_code == 0 and f"s3://{BUCKET}/cli/car1" in result.output, result.output
    # a missing bucket: one line naming the destination, no traceback, no credential
    result = runner.invoke(
        app, ["runtime", "sync", str(harvest), "s3://no-such-bucket/x", "--retries", "0", "--vehicle", "car9", *creds]
    )
    assert result.exit_code == 1, result.output
    assert "s3://no-such-bucket/x/car9" in result.output and "Traceback" not in result.output
    assert KEY not in result.output and SECRET not in result.output
    result = runner.invoke(app, ["runtime", "sync", str(tmp_path), "memory://x"])
    assert result.exit_code == 1 and "not a harvest folder" in result.output
