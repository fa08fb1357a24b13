"""The fleet loop's trust boundaries (issue 33), tried as an attacker and as a careless user would: a vehicle that
writes hostile manifest rows and keys, a torn manifest line, a password in a URL, a decompression bomb, two writers
into one folder. Each numbered case of the issue is a test here, on `file://` folders, fsspec's `memory://` (it keeps
keys like `a/../b` as written, as S3 does) and the moto S3 server of conftest.py where a bucket is involved.

Every test walks its temp root before and after: nothing is written or deleted outside the folders the command
was given (and its cache), no byte of a file outside them reaches an output, and no harvested frame is lost."""

from __future__ import annotations

import json
import os
import struct
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import probs_meta

from csst_edge import storage
from csst_edge.errors import CsstError
from csst_edge.fileio import append_jsonl, read_jsonl
from csst_edge.runtime.harvest import Harvester, HarvestSettings, read_harvest_entries, read_harvest_records
from csst_edge.runtime.postprocess import Prediction
from csst_edge.runtime.sources import Frame

H, W = 24, 32
META = probs_meta(H, W, ["a", "b", "c"])
SECRET = "hunter2-secret"


# ------------------------------------------------------------------------------------------------ helpers
def settings(vehicle: str = "car1", **kw) -> HarvestSettings:
    return HarvestSettings(
        rate_per_min=0, min_score=0.0, min_sharpness=0.0, duplicate_similarity=1.0, vehicle=vehicle, **kw
    )


def harvest(folder, n: int, vehicle: str = "car1", seed: int = 0, **kw) -> Harvester:
    """`n` noise frames harvested into `folder` (a path or a URL) by the real harvester, which is then closed."""
    h = Harvester(folder, META, settings(vehicle, **kw), class_frequencies=np.ones(3))
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        frame = Frame(i, image, float(i), 1.7e9 + 1000 * seed + i, str(i))
        h.consider(frame, image, Prediction(np.full((3, H, W), 1 / 3, np.float32), META))
    h.close()
    return h


def jpeg(seed: int = 0) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def changed_outside(before: dict, after: dict, *allowed: Path) -> list[str]:
    """Paths created, deleted or modified between two snapshots that are not below one of `allowed`."""
    roots = [str(a) + os.sep for a in allowed]
    diff = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    return sorted(p for p in diff if not any(p.startswith(r) for r in roots))


def remote_bytes(url: str) -> dict[str, bytes]:
    """Every object below a URL (or file below a path) with its content."""
    return {str(loc): storage.read_bytes(loc) for loc in storage.find(url)}


def put_raw(url: str, rel: str, data: bytes) -> None:
    """An object at exactly `<url>/<rel>`, the key as written (`images/../../x` included), as a vehicle can."""
    if not storage.is_remote(url):
        storage.write_bytes(storage.join(url, rel), data)
        return
    fs, path = storage.filesystem(f"{url}/{rel}")
    fs.pipe_file(path, data)


def upload_folder(folder: Path, url: str) -> None:
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        storage.write_bytes(storage.join(url, f.relative_to(folder).as_posix()), f.read_bytes())


def one_line(error: BaseException) -> str:
    text = str(error)
    assert isinstance(error, CsstError) and "\n" not in text and "Traceback" not in text, text
    return text


@pytest.fixture(params=["file", "memory", "s3"])
def bucket(request, tmp_path) -> str:
    """A place to put shared objects: a file:// folder, a memory:// prefix or a bucket on the moto server."""
    if request.param == "file":
        return (tmp_path / "bucket").as_uri()
    if request.param == "memory":
        return f"memory://hostile-{uuid.uuid4().hex[:8]}"
    return request.getfixturevalue("s3_bucket")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CSST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ------------------------------------------------------------------------------------------------ high
def test_01_a_vehicle_row_cannot_make_the_round_write_outside_its_folders(tmp_path, bucket, cache):
    """A row under the vehicle's own prefix names `images/../../../../<tmp>/evil/evil.pth` and the object exists
    under that key: neither `round`'s merge nor a pull of the harvest (runtime --harvest URL) writes it anywhere."""
    from csst_edge.pipeline.round import merge_harvests
    from csst_edge.runtime.sync import SyncSettings, sync_harvest

    local = tmp_path / "vehicle"
    harvest(local, 2)
    url = f"{bucket}/fleet/car1"
    if storage.is_remote(url):
        upload_folder(local, url)
        base = storage.cache_path(f"{url}/images/x.jpg").parent  # where the cache would put the frames
    else:
        url, base = str(local), local / "images"
    evil = tmp_path / "evil" / "evil.pth"
    image = "images/" + os.path.relpath(evil, base)
    payload = jpeg(7)  # a readable image, so that nothing downstream rejects it for being corrupt
    if storage.is_remote(url):
        put_raw(url, image, payload)
    else:  # on a file system the key is a real path outside the folder: the attack is reading it
        evil.parent.mkdir()
        evil.write_bytes(payload)
    row = {"event": "harvest", "name": "car1_evil", "image": image, "score": 1.0, "bytes": len(payload)}
    if storage.is_remote(url):
        text = storage.read_text(f"{url}/manifest.jsonl") + json.dumps(row) + "\n"
        storage.write_text(f"{url}/manifest.jsonl", text)
    else:
        append_jsonl(local / "manifest.jsonl", row)
    # the same row in a synced vehicle prefix (`runtime sync`'s layout)
    synced = f"{bucket}/synced"
    sync_harvest(harvest(tmp_path / "vehicle2", 2, vehicle="car2", seed=1).folder, synced, SyncSettings())
    rogue = {**row, "name": "car2_evil", "sha256": "0" * 64}
    put_raw(f"{synced}/car2", f"manifest/{'0' * 64}.json", json.dumps(rogue).encode())
    if storage.is_remote(synced):
        put_raw(f"{synced}/car2", image, payload)

    before = snapshot(tmp_path)
    harvests = [storage.as_location(url), storage.as_location(f"{synced}/car2")]  # as `round` gives them
    merged = merge_harvests(harvests, tmp_path / "round" / "frames")
    assert merged["kept"] == 4  # the four real frames, not one less
    assert evil.exists() == (not storage.is_remote(url))  # on a file system it was there before, untouched
    outputs = [p for p in (tmp_path / "round").rglob("*") if p.is_file()]
    assert all(p.read_bytes() != payload for p in outputs)  # nothing of it was read into the round either
    assert changed_outside(before, snapshot(tmp_path), tmp_path / "round", cache) == []

    if storage.is_remote(url):  # the runtime continuing this harvest pulls it into a staging folder
        before = snapshot(tmp_path)
        h = Harvester(url, META, settings(), class_frequencies=np.ones(3))
        assert len(h.entries) == 2
        h.close()
        assert changed_outside(before, snapshot(tmp_path), cache) == []
        assert not evil.exists()
        assert all(p.read_bytes() != payload for p in cache.rglob("*") if p.is_file())


def test_01_cache_path_never_leaves_the_cache(cache):
    for url in ("s3://b/a/../../../../x.pth", "memory://b/images/../../x", "s3://../x", "s3://b/./x"):
        with pytest.raises(storage.StorageError):
            storage.cache_path(url)
    assert cache in storage.cache_path("s3://b/fleet/car1/images/a.jpg").parents


def test_02_a_remote_row_cannot_upload_or_delete_a_file_of_the_vehicle(tmp_path, bucket):
    """A harvest manifest row with an absolute `image` (a key file on the vehicle) is neither uploaded by the push
    nor deleted by quota eviction."""
    secret = tmp_path / "home" / "id_rsa"
    secret.parent.mkdir()
    secret.write_bytes(b"-----BEGIN PRIVATE KEY----- " + SECRET.encode())
    url = f"{bucket}/fleet/car1"
    local = storage.local_path(url)
    seed_folder = local if local is not None else tmp_path / "seed"
    harvest(seed_folder, 2)
    row = {"event": "harvest", "name": "car1_key", "image": str(secret), "score": 0.0, "bytes": 10_000_000}
    append_jsonl(seed_folder / "manifest.jsonl", row)
    if local is None:
        upload_folder(seed_folder, url)
        h = Harvester(url, META, settings(), class_frequencies=np.ones(3))  # pulls the rows, pushes at close
        h.close()
        assert all(SECRET.encode() not in data for data in remote_bytes(url).values())
    # a tiny quota: the hostile row (score 0, 10 MB) would be the first one evicted
    before = snapshot(tmp_path)
    h = harvest(url, 2, seed=3, quota_mb=1.0)
    assert secret.is_file() and SECRET.encode() in secret.read_bytes()
    assert len(h.entries) == 4  # the real frames: none lost to the row's made-up size
    assert all(SECRET.encode() not in data for data in remote_bytes(url).values())
    allowed = [tmp_path / "cache"] + ([local] if local is not None else [])
    assert changed_outside(before, snapshot(tmp_path), *allowed) == []


def test_03_a_torn_manifest_line_loses_no_frame(tmp_path):
    """A run dies mid-append; the next run appends after the torn line; the run after that still has every frame."""
    folder = tmp_path / "h"
    harvest(folder, 2)
    with open(folder / "manifest.jsonl", "a") as f:
        f.write('{"event": "harvest", "name": "car1_torn", "ima')  # power lost mid-line
    second = harvest(folder, 2, seed=1)
    assert len(second.entries) == 4
    third = Harvester(folder, META, settings(), class_frequencies=np.ones(3))
    assert third.recovered["orphans_deleted"] == 0 and len(third.entries) == 4
    assert len(list((folder / "images").glob("*.jpg"))) == 4
    skipped = Counter()
    records = read_jsonl(folder / "manifest.jsonl", skipped)
    assert sum(r.get("event") == "harvest" for r in records) == 4 and skipped["bad line"] == 1
    third.close()


def _pseudo_folder(where: str) -> None:
    label = cv2.imencode(".png", np.zeros((H, W), np.uint8))[1].tobytes()
    storage.write_json(storage.join(where, "meta.json"), {"class_names": ["a", "b", "c"], "ignore_index": 255})
    for name in "abc":
        storage.write_bytes(storage.join(where, f"labels/{name}.png"), label)
        storage.write_bytes(storage.join(where, f"images/{name}.jpg"), jpeg())
    lines = [
        json.dumps(
            {
                "name": n,
                "image": storage.redact(storage.join(where, f"images/{n}.jpg")),
                "label": f"labels/{n}.png",
                "status": "ok",
            }
        )
        for n in "abc"
    ]
    # a torn line in the middle (an earlier run died mid-line; later runs appended after it)
    storage.write_text(
        storage.join(where, "manifest.jsonl"), lines[0] + '\n{"name": "b", "sta\n' + "\n".join(lines[1:]) + "\n"
    )


def test_03_a_torn_pseudo_manifest_line_hides_no_label(tmp_path, bucket):
    from csst_edge.data.pseudo_folder import read_pseudo_manifest

    folder = storage.join(bucket, "pseudo")
    _pseudo_folder(folder)
    pairs, _ = read_pseudo_manifest(folder)
    assert sorted(name for name, *_ in pairs) == ["a", "b", "c"]  # training sees every finished label
    skipped = Counter()
    assert len(storage.read_jsonl(storage.join(folder, "manifest.jsonl"), skipped)) == 3 and skipped["bad line"] == 1


def test_03_appends_end_a_torn_line_first(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n{"b": 2, "to')
    append_jsonl(path, {"c": 3})
    assert read_jsonl(path) == [{"a": 1}, {"c": 3}]
    assert path.read_text().endswith('\n{"c":3}\n')


# ------------------------------------------------------------------------------------------------ medium
def test_04_sync_delete_local_never_touches_a_file_outside_the_harvest(tmp_path, bucket):
    from csst_edge.runtime.sync import SyncSettings, sync_harvest

    folder = tmp_path / "h"
    harvest(folder, 2)
    victims = []
    for k, image in enumerate(("../victim/photo.jpg", str(tmp_path / "victim" / "other.jpg"), "meta.json")):
        if image != "meta.json":
            victim = (folder / image).resolve() if not os.path.isabs(image) else Path(image)
            victim.parent.mkdir(exist_ok=True)
            victim.write_bytes(jpeg(10 + k))
            victims.append(victim)
        size = (folder / image).stat().st_size
        append_jsonl(folder / "manifest.jsonl", {"event": "harvest", "name": f"x{k}", "image": image, "bytes": size})
    expected = {r["name"] for r in read_harvest_records(folder)}
    assert expected and not expected & {"x0", "x1", "x2"}
    before = snapshot(tmp_path)
    summary = sync_harvest(folder, bucket, SyncSettings(vehicle="car1", delete_local=True))
    assert summary.uploaded == 2 and summary.deleted_local == 2
    assert all(v.is_file() for v in victims) and (folder / "meta.json").is_file()
    uploaded = remote_bytes(f"{bucket}/car1")
    assert all(v.read_bytes() not in uploaded.values() for v in victims)
    names = {json.loads(d)["name"] for k, d in uploaded.items() if "/manifest/" in k}
    assert names == expected  # every frame is in the bucket before its local copy went
    local = storage.local_path(bucket)
    allowed = [folder] + ([local] if local is not None else [])
    assert changed_outside(before, snapshot(tmp_path), *allowed) == []


class _FakeBackend:
    name = "fake"
    meta = META
    path = Path("fake.onnx")

    def infer(self, frame):
        return np.full((1, 3, H, W), 1 / 3, np.float32)

    def close(self):
        pass


def test_05_a_password_in_a_source_url_is_never_stored_or_printed(tmp_path, bucket):
    from csst_edge.runtime.loop import RuntimeSettings, run_runtime
    from csst_edge.runtime.sources import SourceError, open_source
    from csst_edge.runtime.sync import SyncSettings, sync_harvest

    url = f"rtsp://admin:{SECRET}@127.0.0.1:9/stream"
    source = open_source(url, open_timeout_s=0.5)
    assert SECRET not in source.name and "127.0.0.1:9/stream" in source.name
    with pytest.raises(SourceError) as e:
        source.open()
    assert SECRET not in one_line(e.value)
    with pytest.raises(SourceError) as e:  # a GStreamer pipeline with the URL in it
        pipeline = open_source(f"rtspsrc location={url} ! decodebin ! appsink")
        assert SECRET not in pipeline.name
        raise SourceError("no GStreamer here")
    assert SECRET not in str(e.value)
    # a whole run: the error, run.summary.json and the harvest's meta.json
    run = RuntimeSettings(harvest=tmp_path / "h", log=tmp_path / "run.jsonl", max_retries=0, backoff_s=0.01)
    run.harvest_settings = settings()
    with pytest.raises(SourceError) as e:
        run_runtime(tmp_path / "fake.onnx", url, run, backend=_FakeBackend())
    assert SECRET not in one_line(e.value)
    for written in (tmp_path / "run.summary.json", tmp_path / "h" / "meta.json"):
        assert SECRET not in written.read_text() and "127.0.0.1:9/stream" in written.read_text()
    # every manifest row's `source`, which `runtime sync` uploads
    h = Harvester(tmp_path / "h2", META, settings(), source_name=url, class_frequencies=np.ones(3))
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    h.consider(Frame(0, image, 0.0, 1.7e9, "0"), image, Prediction(np.full((3, H, W), 1 / 3, np.float32), META))
    h.close()
    for written in (tmp_path / "h2" / "manifest.jsonl", tmp_path / "h2" / "meta.json"):
        assert SECRET not in written.read_text()
    sync_harvest(tmp_path / "h2", bucket, SyncSettings())
    assert all(SECRET.encode() not in data for data in remote_bytes(bucket).values())


def png_header(width: int, height: int) -> bytes:
    """A small PNG whose header declares `width` x `height` RGB pixels (its image data is a few bytes)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_06_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    from csst_edge.data.imageio import read_image
    from csst_edge.errors import DatasetError
    from csst_edge.runtime.sources import ImageFolderSource

    bomb = tmp_path / "in" / "bomb.png"
    bomb.parent.mkdir()
    bomb.write_bytes(png_header(20000, 20000))  # 400 MP declared, a few hundred bytes on disk
    import csst_edge.data.imageio as imageio

    def no_decode(*_args, **_kwargs):
        raise AssertionError("the image was decoded: the limit must be checked from the header first")

    with monkeypatch.context() as patch:
        patch.setattr(imageio.cv2, "imdecode", no_decode)
        with pytest.raises(DatasetError) as e:
            read_image(bomb)
    assert "bomb.png" in one_line(e.value) and "limit" in str(e.value) and "MP" in str(e.value)
    # the limit is configurable: an ordinary 64x64 image over a 1000-pixel limit is refused the same way
    small = tmp_path / "in" / "small.png"
    cv2.imwrite(str(small), np.zeros((64, 64, 3), np.uint8))
    monkeypatch.setenv("CSST_MAX_PIXELS", "1000")
    with pytest.raises(DatasetError, match="small.png.*limit"):
        read_image(small)
    monkeypatch.setenv("CSST_MAX_PIXELS", "5000")
    assert read_image(small).shape == (64, 64, 3)
    monkeypatch.delenv("CSST_MAX_PIXELS")
    # the runtime's image-folder source skips it (reported), and reads the others
    cv2.imwrite(str(tmp_path / "in" / "ok.png"), np.zeros((H, W, 3), np.uint8))
    source = ImageFolderSource(tmp_path / "in")
    source.open()
    frames = []
    while (item := source.read()) is not None:
        frames.append(item[1])
    assert frames == ["ok.png", "small.png"] and any("bomb.png" in u for u in source.unreadable)


def test_06_pseudo_label_reports_the_bomb_and_labels_the_rest(tmp_path):
    from test_pseudo import make_teacher
    from test_pseudo import settings as pseudo_settings

    from csst_edge.pseudo import generate_pseudo_labels

    teacher = make_teacher(tmp_path / "teacher.pt")
    images = tmp_path / "in"
    images.mkdir()
    (images / "bomb.png").write_bytes(png_header(20000, 20000))
    cv2.imwrite(str(images / "ok.png"), np.zeros((32, 48, 3), np.uint8))
    summary = generate_pseudo_labels(teacher, [images], tmp_path / "out", pseudo_settings(), progress=False)
    assert (summary.labelled, summary.failed) == (1, 1)
    rows = {r["name"]: r for r in read_jsonl(tmp_path / "out" / "manifest.jsonl")}
    assert (
        rows["bomb"]["status"] == "error" and "limit" in rows["bomb"]["error"] and "bomb.png" in rows["bomb"]["error"]
    )


def test_07_a_list_line_with_dotdot_writes_nothing_outside_out(tmp_path):
    from test_pseudo import make_teacher
    from test_pseudo import settings as pseudo_settings

    from csst_edge.pseudo import generate_pseudo_labels

    teacher = make_teacher(tmp_path / "teacher.pt")
    (tmp_path / "in").mkdir()
    for name in ("good.jpg", "also.jpg"):
        cv2.imwrite(str(tmp_path / "in" / name), np.zeros((32, 48, 3), np.uint8))
    listing = tmp_path / "lists" / "sub" / "list.txt"
    listing.parent.mkdir(parents=True)
    listing.write_text("../../in/good.jpg\n" + str(tmp_path / "in" / "also.jpg") + "\n")
    out = tmp_path / "work" / "out"
    before = snapshot(tmp_path)
    summary = generate_pseudo_labels(teacher, [listing], out, pseudo_settings(), progress=False)
    assert summary.labelled >= 1
    assert changed_outside(before, snapshot(tmp_path), out) == []
    for row in read_jsonl(out / "manifest.jsonl"):
        assert storage.inside(out, row.get("label", "labels/x.png")) is not None


def test_08_a_folder_that_is_not_a_harvest_is_an_error_not_a_sweep(tmp_path):
    from csst_edge.runtime.harvest import HarvestError

    photos = tmp_path / "photos"
    (photos / "images").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "images/c.jpg", "images/car1_20260101T000000000Z_0000001.jpg"):
        (photos / name).write_bytes(jpeg())
    before = snapshot(tmp_path)
    with pytest.raises(HarvestError) as e:
        Harvester(photos, META, settings(), class_frequencies=np.ones(3))
    assert "not a harvest" in one_line(e.value)
    assert snapshot(tmp_path) == before
    # a real harvest folder: a file in images/ that the harvester did not write is left alone
    folder = tmp_path / "h"
    harvest(folder, 2)
    (folder / "images" / "holiday.jpg").write_bytes(jpeg(3))
    h = Harvester(folder, META, settings(), class_frequencies=np.ones(3))
    assert (folder / "images" / "holiday.jpg").is_file() and len(h.entries) == 2
    h.close()


# ------------------------------------------------------------------------------------------------ low
def test_09_a_vehicle_name_with_a_slash_is_one_line_error(tmp_path):
    from csst_edge.runtime.sync import SyncSettings, sync_harvest

    for bad in ("car/7", "../car", ".hidden", "car 7"):
        before = snapshot(tmp_path)
        with pytest.raises(CsstError) as e:
            harvest(tmp_path / "h", 1, vehicle=bad)
        assert "vehicle" in one_line(e.value)
        assert snapshot(tmp_path) == before and not (tmp_path / "h").exists()
    folder = tmp_path / "ok"
    harvest(folder, 1)
    with pytest.raises(CsstError) as e:
        sync_harvest(folder, (tmp_path / "dest").as_uri(), SyncSettings(vehicle="car/7"))
    assert "vehicle" in one_line(e.value) and not (tmp_path / "dest").exists()


def test_10_a_sync_destination_with_user_info_is_refused(tmp_path, monkeypatch):
    from csst_edge.runtime.sync import SyncSettings, sync_harvest

    folder = tmp_path / "h"
    harvest(folder, 1)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    for dest in (f"file://user:{SECRET}@/x", f"memory://user:{SECRET}@bucket/x", "memory://user@bucket/x"):
        with pytest.raises(CsstError) as e:
            sync_harvest(folder, dest, SyncSettings(vehicle="car1"))
        assert SECRET not in one_line(e.value)
    assert changed_outside(before, snapshot(tmp_path), folder / ".sync") == []


def test_11_redaction_covers_signatures_and_at_signs_in_passwords():
    text = storage.redact_text(
        f"failed: https://user:pa@ss{SECRET}@host.example/a.jpg?X-Amz-Signature=ab12{SECRET}&part=2 "
        f"and s3://b/x?token={SECRET} and https://h/x?sig={SECRET}#frag"
    )
    assert SECRET not in text and "pa@ss" not in text
    assert "https://host.example/a.jpg" in text and "part=2" in text
    assert storage.redact(f"https://user:pa@ss{SECRET}@host/x") == "https://host/x"


def test_11_image_read_errors_name_the_url_without_its_secrets():
    from csst_edge.data.imageio import read_image, read_label

    base = f"memory://hostile-{uuid.uuid4().hex[:8]}"
    colour = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
    storage.write_bytes(f"{base}/l.png?sig={SECRET}", colour)  # a 3-channel "label"
    storage.write_bytes(f"{base}/bad.jpg?token={SECRET}", b"\xff\xd8 not an image")
    for read, url in ((read_label, f"{base}/l.png?sig={SECRET}"), (read_image, f"{base}/bad.jpg?token={SECRET}")):
        with pytest.raises(CsstError) as e:
            read(url)
        assert SECRET not in one_line(e.value) and base in str(e.value)


def test_12_configs_refuse_urls_with_credentials_and_dump_none(tmp_path):
    from csst_edge.data.selection import SourceConfig
    from csst_edge.errors import ConfigError
    from csst_edge.train.config import TrainConfig, dump_config, load_train_config

    for override in (
        f"pretrained=https://user:{SECRET}@host/m.pt",
        f"pretrained=https://host/m.pt?token={SECRET}",
        f"train=[{{pseudo: 's3://b/p?X-Amz-Signature={SECRET}'}}]",
        f"train=[{{pseudo: 'https://u:{SECRET}@host/p'}}]",
        f"mlflow_tracking_uri=https://user:{SECRET}@mlflow.example",
        "mlflow_tracking_uri=https://user@mlflow.example",
        f"mlflow_tracking_uri=https://mlflow.example?token={SECRET}",
    ):
        with pytest.raises(ConfigError) as e:
            load_train_config(None, [override])
        assert SECRET not in one_line(e.value)
    cfg = TrainConfig(
        pretrained=f"https://user:{SECRET}@host/m.pt?token={SECRET}",
        train=[SourceConfig(pseudo=f"s3://b/p?sig={SECRET}")],
        mlflow_tracking_uri=f"https://user:{SECRET}@mlflow.example",
    )
    text = dump_config(cfg)
    assert SECRET not in text and "host/m.pt" in text and "s3://b/p" in text
    ok = load_train_config(None, ["pretrained=https://host/m.pt", "train=[{pseudo: s3://b/p}]"])
    assert ok.pretrained == "https://host/m.pt"


def test_13_two_pseudo_label_runs_into_one_out(tmp_path, monkeypatch):
    """The second run, started while the first is labelling, is one error naming the first; the first finishes with
    one manifest line per image."""
    from test_pseudo import make_teacher, write_images
    from test_pseudo import settings as pseudo_settings

    import csst_edge.pseudo.generate as generate

    teacher = make_teacher(tmp_path / "teacher.pt")
    write_images(tmp_path / "in", 4)
    out = tmp_path / "out"
    second: list[BaseException] = []
    started: list[bool] = []
    original = generate.write_item_outputs

    def first_item_starts_a_second_run(*args, **kw):
        if not started:
            started.append(True)  # once: the second run's own items must not start a third
            try:
                generate_second = generate.generate_pseudo_labels(
                    teacher, [tmp_path / "in"], out, pseudo_settings(), progress=False
                )
                second.append(AssertionError(f"the second run labelled {generate_second.labelled} images"))
            except CsstError as e:
                second.append(e)
        return original(*args, **kw)

    monkeypatch.setattr(generate, "write_item_outputs", first_item_starts_a_second_run)
    summary = generate.generate_pseudo_labels(teacher, [tmp_path / "in"], out, pseudo_settings(), progress=False)
    message = one_line(second[0])
    assert str(os.getpid()) in message
    assert summary.labelled == 4 and len(read_jsonl(out / "manifest.jsonl")) == 4
    # the lock is gone with its writer: a rerun works (and has nothing left to do)
    monkeypatch.setattr(generate, "write_item_outputs", original)
    again = generate.generate_pseudo_labels(teacher, [tmp_path / "in"], out, pseudo_settings(), progress=False)
    assert again.labelled == 0 and again.done_before == 4


def test_13_two_syncs_into_one_vehicle_prefix(tmp_path, bucket):
    """A sync from a second folder into the prefix another sync is writing is refused and does not touch its
    uploads in flight; the first one completes."""
    from csst_edge.runtime.sync import SyncSettings, sync_harvest

    one, two = tmp_path / "one", tmp_path / "two"
    harvest(one, 2)
    harvest(two, 2, seed=1)
    refused: list[BaseException] = []

    def on_bytes(n):
        if not refused:
            refused.append(AssertionError("the second sync is still running"))
            try:
                sync_harvest(two, bucket, SyncSettings(vehicle="car1"))
                refused[0] = AssertionError("the second sync ran")
            except CsstError as e:
                refused[0] = e

    summary = sync_harvest(one, bucket, SyncSettings(vehicle="car1"), on_bytes=on_bytes)
    assert summary.uploaded == 2 and "sync" in one_line(refused[0])
    rows = [k for k in storage.find(f"{bucket}/car1") if "/manifest/" in str(k)]
    assert len(rows) == 2
    # once the first is done, the second folder may sync there (its own frames, the first one's stay)
    assert sync_harvest(two, bucket, SyncSettings(vehicle="car1")).uploaded == 2
    assert len([k for k in storage.find(f"{bucket}/car1") if "/manifest/" in str(k)]) == 4


def test_13_a_young_partial_upload_of_another_writer_is_kept(tmp_path, bucket):
    from csst_edge.runtime.sync import SyncSettings, sync_harvest

    folder = tmp_path / "h"
    harvest(folder, 1)
    young = f".partial/{int(time.time() * 1000)}-0othersync-{uuid.uuid4().hex}-images_x.jpg"
    put_raw(f"{bucket}/car1", young, b"in flight elsewhere")
    summary = sync_harvest(folder, bucket, SyncSettings(vehicle="car1"))
    assert summary.partials_removed == 0 and storage.exists(f"{bucket}/car1/{young}")


def test_14_a_manifest_line_without_image_is_a_counted_skip(tmp_path, bucket):
    from csst_edge.data.pseudo_folder import read_pseudo_manifest
    from csst_edge.pipeline.round import merge_harvests
    from csst_edge.runtime.sync import SyncSettings, sync_harvest

    folder = tmp_path / "h"
    harvest(folder, 2)
    for row in ({"event": "harvest"}, {"event": "harvest", "name": 7, "image": None}, {"event": "evict"}, [1, 2]):
        with open(folder / "manifest.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    assert len(read_harvest_entries(folder)) == len(read_harvest_records(folder)) == 2
    h = Harvester(folder, META, settings(), class_frequencies=np.ones(3))
    assert len(h.entries) == 2
    h.close()
    assert sync_harvest(folder, bucket, SyncSettings(vehicle="car1")).items == 2
    assert merge_harvests([folder], tmp_path / "round")["kept"] == 2
    pseudo = storage.join(bucket, "pseudo")
    _pseudo_folder(pseudo)
    text = (
        storage.read_text(storage.join(pseudo, "manifest.jsonl")) + '{"status": "ok"}\n{"name": "z", "status": "ok"}\n'
    )
    storage.write_text(storage.join(pseudo, "manifest.jsonl"), text)
    pairs, _ = read_pseudo_manifest(pseudo)
    assert sorted(name for name, *_ in pairs) == ["a", "b", "c"]


def test_15_two_machines_sharing_one_harvest_url_delete_none_of_each_others_frames(tmp_path, bucket, monkeypatch):
    if not storage.is_remote(bucket):
        # a shared local folder: one harvester at a time (the second is told who holds it)
        folder = tmp_path / "shared"
        first = Harvester(folder, META, settings(), class_frequencies=np.ones(3))
        with pytest.raises(CsstError) as e:
            Harvester(folder, META, settings("car2"), class_frequencies=np.ones(3))
        assert str(os.getpid()) in one_line(e.value)
        first.close()
        return
    url = f"{bucket}/fleet/shared"
    monkeypatch.setenv("CSST_CACHE", str(tmp_path / "machine-b"))
    b = Harvester(url, META, settings("car2"), class_frequencies=np.ones(3))  # B starts first: nothing there yet
    monkeypatch.setenv("CSST_CACHE", str(tmp_path / "machine-a"))
    pushed_by_a = []
    try:
        a = harvest(url, 2, vehicle="car1")
        pushed_by_a = [e.image for e in a.entries.values()]
    except CsstError:  # a URL held by B: refusing A is as good (nothing to lose)
        pass
    image = np.random.default_rng(5).integers(0, 256, (H, W, 3), dtype=np.uint8)
    b.consider(Frame(0, image, 0.0, 1.8e9, "0"), image, Prediction(np.full((3, H, W), 1 / 3, np.float32), META))
    b.close()  # B's push: its manifest lacks A's frames
    present = {storage.relative_to(loc, url) for loc in storage.find(url)}
    assert set(pushed_by_a) <= present  # A's frames are still in the bucket
    assert {e.image for e in b.entries.values()} <= present
