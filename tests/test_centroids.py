"""Centroid index and sampler: components, centroids inside their objects, incremental updates, balanced epochs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

import csst_edge.data.centroids as centroids_mod
from csst_edge.data.centroids import (
    CentroidIndex,
    build_index,
    build_or_update_index,
    extract_centroids,
    update_index,
)
from csst_edge.data.sampler import CentroidSampler, crop_window_containing
from csst_edge.errors import DatasetError


def test_every_component_of_every_class_gets_one_centroid_including_class_zero():
    label = np.full((20, 30), 255, np.uint8)
    label[0:5, 0:5] = 0  # class 0 must not be treated as background
    label[10:12, 10:12] = 1
    label[12:14, 12:14] = 1  # touches the previous block diagonally: one component with 8-connectivity
    label[0:3, 20:30] = 1  # a second, separate component of class 1
    label[15:20, 25:30] = 2
    fc = extract_centroids(label, num_classes=3, ignore_index=255)
    assert sorted(Counter(fc.cls.tolist()).items()) == [(0, 1), (1, 2), (2, 1)]
    points = {
        (c, a): (y, x)
        for c, a, y, x in zip(fc.cls.tolist(), fc.area.tolist(), fc.y.tolist(), fc.x.tolist(), strict=False)
    }
    assert (
        points[(0, 25)] == (2, 2) and points[(1, 8)] in ((11, 11), (12, 12)) and points[(1, 30)] in ((1, 24), (1, 25))
    )  # centroid x 24.5
    assert points[(2, 25)] == (17, 27)
    assert fc.histogram.tolist() == [25, 38, 25]


def test_centroid_of_a_ring_is_moved_onto_the_ring():
    label = np.zeros((41, 41), np.uint8)
    cv2.circle(label, (20, 20), 15, 1, thickness=3)
    fc = extract_centroids(label, num_classes=2, ignore_index=255)
    ring = fc.cls == 1
    assert ring.sum() == 1
    y, x = int(fc.y[ring][0]), int(fc.x[ring][0])
    assert label[y, x] == 1  # the geometric centroid (20, 20) is background; the stored point is on the ring
    assert 12 <= np.hypot(y - 20, x - 20) <= 17  # on the ring (radius 15, thickness 3), the point nearest the centre


def test_min_area_drops_small_components_and_out_of_range_ids_are_ignored():
    label = np.zeros((10, 10), np.uint8)
    label[0, 0] = 1  # 1 px
    label[5:8, 5:8] = 1  # 9 px
    label[9, 9] = 7  # not a class of a 2-class dataset
    fc = extract_centroids(label, num_classes=2, ignore_index=255, min_area=4)
    assert sorted(fc.cls.tolist()) == [0, 1]
    assert sorted(fc.area.tolist()) == [9, 89]  # class 0: 100 - 1 - 9 - 1 (the id 7 pixel)


def _write_labels(folder: Path, n: int, seed: int = 0, size=(64, 96), num_classes=5) -> list[Path]:
    """Label maps with a long tail: class 0 background, class k in 1..4 appears in fewer maps as k grows."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        label = np.zeros(size, np.uint8)
        for c in range(1, num_classes):
            if rng.random() < 1.0 / c:
                for _ in range(int(rng.integers(1, 4))):
                    y, x = rng.integers(0, size[0] - 8), rng.integers(0, size[1] - 8)
                    label[y : y + int(rng.integers(3, 8)), x : x + int(rng.integers(3, 8))] = c
        path = folder / f"{i:04d}.png"
        cv2.imwrite(str(path), label)
        paths.append(path)
    return paths


def test_parallel_build_equals_serial_and_survives_a_save_load_round_trip(tmp_path):
    files = _write_labels(tmp_path / "labels", 12)
    serial = build_index(files, num_classes=5, workers=1, progress=False)
    parallel = build_index(files, num_classes=5, workers=2, progress=False)
    for key in ("image_id", "cls", "y", "x", "area", "histograms"):
        np.testing.assert_array_equal(getattr(serial, key), getattr(parallel, key))
    serial.save(tmp_path / "index.npz")
    loaded = CentroidIndex.load(tmp_path / "index.npz")
    assert loaded.files == serial.files and loaded.fingerprints == serial.fingerprints
    np.testing.assert_array_equal(loaded.cls, serial.cls)
    # every stored point lies on a pixel of its class
    for i, f in enumerate(loaded.files):
        label = cv2.imread(f, cv2.IMREAD_UNCHANGED)
        rows = loaded.image_id == i
        assert (label[loaded.y[rows], loaded.x[rows]] == loaded.cls[rows]).all()


def test_update_reads_only_new_and_changed_files(tmp_path, monkeypatch):
    files = _write_labels(tmp_path / "labels", 6)
    index = build_index(files[:5], num_classes=5, workers=1, progress=False)
    changed = files[2]
    label = cv2.imread(str(changed), cv2.IMREAD_UNCHANGED)
    label[:10, :10] = 4
    cv2.imwrite(str(changed), label)
    read = []
    real_read = centroids_mod.read_label
    spy = lambda p, lut=None, **kw: read.append(Path(p)) or real_read(p, lut, **kw)  # noqa: E731
    monkeypatch.setattr(centroids_mod, "read_label", spy)
    updated, info = update_index(index, [files[0], files[2], files[3], files[4], files[5]], workers=1, progress=False)
    assert sorted(read) == sorted([files[2], files[5]])
    assert info == {"reused": 3, "read": 2, "dropped": 1}
    fresh = build_index([files[0], files[2], files[3], files[4], files[5]], num_classes=5, workers=1, progress=False)
    for key in ("image_id", "cls", "y", "x", "area"):
        np.testing.assert_array_equal(getattr(updated, key), getattr(fresh, key))


def _same_rows(a: CentroidIndex, b: CentroidIndex) -> None:
    assert a.files == b.files and a.min_area == b.min_area
    for key in ("image_id", "cls", "y", "x", "area"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))


def test_build_or_update_reuses_an_index_with_the_same_settings(tmp_path, monkeypatch):
    files = _write_labels(tmp_path / "labels", 4)
    build_index(files[:3], num_classes=5, min_area=4, progress=False).save(tmp_path / "index.npz")
    read = []
    real_read = centroids_mod.read_label
    spy = lambda p, lut=None, **kw: read.append(Path(p)) or real_read(p, lut, **kw)  # noqa: E731
    monkeypatch.setattr(centroids_mod, "read_label", spy)
    index, info = build_or_update_index(files, 5, min_area=4, previous=tmp_path / "index.npz", progress=False)
    assert read == [files[3]] and info == {"reused": 3, "read": 1, "dropped": 0}
    _same_rows(index, build_index(files, num_classes=5, min_area=4, progress=False))
    # no previous index, or a path that does not exist yet: everything is read
    for previous in (None, tmp_path / "missing.npz"):
        index, info = build_or_update_index(files, 5, min_area=4, previous=previous, progress=False)
        assert info == {"reused": 0, "read": 4, "dropped": 0}


@pytest.mark.parametrize(
    "old, reason",
    [
        (dict(num_classes=5, min_area=1), "min area 1, not 16"),
        (dict(num_classes=6, min_area=16), "classes 6, not 5"),
        (dict(num_classes=5, min_area=16, ignore_index=0), "ignore index 0, not 255"),
    ],
)
def test_build_or_update_rebuilds_an_index_built_with_other_settings(tmp_path, old, reason):
    """The stale-cache bug: an index cached with min_area=1 was updated in place and kept min_area=1 (and its
    small components) when the trainer or a round asked for another min_area."""
    files = _write_labels(tmp_path / "labels", 6)
    stale = build_index(files, progress=False, **old)
    index, info = build_or_update_index(files, 5, min_area=16, previous=stale, progress=False)
    assert info == {"reused": 0, "read": 6, "dropped": 0, "rebuilt": reason}
    fresh = build_index(files, num_classes=5, min_area=16, progress=False)
    assert index.num_classes == 5 and index.ignore_index == 255
    _same_rows(index, fresh)
    if old["min_area"] < 16:  # the stale index does hold components the new setting drops
        assert (stale.area < 16).any() and not (index.area < 16).any()


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="missing.png"):
        build_index([tmp_path / "missing.png"], num_classes=3, progress=False)
    (tmp_path / "broken.npz").write_bytes(b"not an npz")
    with pytest.raises(DatasetError, match="broken.npz"):
        CentroidIndex.load(tmp_path / "broken.npz")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match="bad.png"):
        build_index([bad], num_classes=3, progress=False)


def _class_shares(sampler: CentroidSampler, epoch: int) -> np.ndarray:
    refs = sampler.sample_epoch(epoch)
    counts = np.bincount([r.cls for r in refs if r.cls >= 0], minlength=sampler.index.num_classes)
    return counts / counts.sum()


def test_epoch_is_class_uniform_oversamples_rare_classes_and_is_deterministic(tmp_path):
    files = _write_labels(tmp_path / "labels", 40)
    index = build_index(files, num_classes=6, workers=1, progress=False)  # class 5 never occurs
    sampler = CentroidSampler(index, num_samples=600, seed=3)
    assert sampler.missing_classes == [5] and "no centroids for 5" in sampler.describe()
    shares = _class_shares(sampler, 0)
    assert np.abs(shares[:5] - 1 / 5).max() <= 1 / 600 + 1e-9  # exactly N/C each, remainder spread
    rarest = int(np.argmin(index.components_per_class()[:5]))
    assert index.components_per_class()[rarest] < 120  # so it had to be oversampled
    refs = sampler.sample_epoch(0)
    assert refs == sampler.sample_epoch(0) and refs != sampler.sample_epoch(1)
    for r in refs[:100]:  # each draw points at a centroid of its class
        rows = (index.image_id == r.image_id) & (index.y == r.y) & (index.x == r.x)
        assert r.cls in index.cls[rows].tolist()


def test_class_uniform_fraction_mixes_in_plain_random_images(tmp_path):
    files = _write_labels(tmp_path / "labels", 10)
    index = build_index(files, num_classes=5, workers=1, progress=False)
    refs = CentroidSampler(index, num_samples=100, class_uniform_fraction=0.3, seed=0).sample_epoch(0)
    assert sum(r.cls >= 0 for r in refs) == 30 and sum(r.y < 0 for r in refs) == 70
    assert len({r.image_id for r in refs if r.y < 0}) == 10  # random part covers every image


def test_sampled_epoch_on_synthetic_scenes_is_class_uniform(tmp_path):
    synth = pytest.importorskip("csst_edge.data.synth")
    folder = tmp_path / "synth"
    folder.mkdir()
    files = []
    for i in range(16):
        _, label = synth.render_scene(i, "A", 128, 256)
        files.append(folder / f"{i}.png")
        cv2.imwrite(str(files[-1]), label)
    index = build_index(files, num_classes=19, workers=1, progress=False)
    sampler = CentroidSampler(index, num_samples=19 * 40, seed=0)
    present = sampler.present
    assert len(present) >= 12
    shares = _class_shares(sampler, 0)[present]
    assert np.abs(shares - 1 / len(present)).max() <= 1 / (19 * 40) + 1e-9


def test_sampled_epoch_on_camvid_is_class_uniform(camvid_root):
    from csst_edge.data.dataset import list_samples, load_dataset_config

    ds = load_dataset_config("camvid", root=camvid_root)
    samples = list_samples(ds, "train")[::4]  # camvid-quarter's labelled images
    index = build_index(
        [s.label for s in samples], 11, 255, min_area=16, luts=[ds.label_lut] * len(samples), workers=2, progress=False
    )
    sampler = CentroidSampler(index, num_samples=1100, seed=0)
    assert sampler.missing_classes == []
    shares = _class_shares(sampler, 0)
    assert np.abs(shares - 1 / 11).max() <= 0.001  # 100 draws per class, stated tolerance 0.1 %


@pytest.mark.parametrize("seed", range(200))
def test_crop_window_always_contains_the_point(seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(1, 300)), int(rng.integers(1, 300))
    ch, cw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
    y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
    top, left = crop_window_containing(h, w, ch, cw, y, x, rng)
    assert 0 <= top <= h - ch and 0 <= left <= w - cw
    assert top <= y < top + ch and left <= x < left + cw


def test_crop_window_positions_are_uniform_among_valid_windows():
    rng = np.random.default_rng(0)
    tops = Counter(crop_window_containing(100, 10, 10, 10, 50, 5, rng)[0] for _ in range(5000))
    assert sorted(tops) == list(range(41, 51))  # all 10 windows that contain row 50, nothing else
    assert max(tops.values()) / min(tops.values()) < 1.4


def test_an_epoch_shorter_than_the_class_list_draws_distinct_classes(tmp_path):
    files = _write_labels(tmp_path / "labels", 10)
    index = build_index(files, num_classes=5, workers=1, progress=False)
    refs = CentroidSampler(index, num_samples=3, seed=0).sample_epoch(0)
    assert len(refs) == 3 and len({r.cls for r in refs}) == 3
