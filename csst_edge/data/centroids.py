"""The centroid index of CSST: every connected component of every class in every label map, reduced to one point.

Stored column-wise (image id, class, y, x, area), together with the label files it was built from, their
fingerprints and per-file class histograms, in one `.npz`. Components come from connected-components-3d, which
labels all classes of a map in one pass (8-connectivity); it treats 0 as background, so class ids are shifted by
one and the ignore id becomes 0.

The stored point is the component's centroid when that pixel belongs to the component, else the component's
pixel nearest to it: the centroid of a ring (a road around a roundabout) or a "C" lies outside the object, and
a crop anchored there could miss the class it was drawn for.
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import cc3d
import numpy as np

from csst_edge.data.imageio import read_label
from csst_edge.errors import DatasetError
from csst_edge.fileio import atomic_write_bytes

INDEX_VERSION = 1


@dataclass
class FileCentroids:
    """The components of one label map."""

    cls: np.ndarray  # int16
    y: np.ndarray  # int32
    x: np.ndarray  # int32
    area: np.ndarray  # int32
    histogram: np.ndarray  # int64 (num_classes,): pixels of each class
    shape: tuple[int, int]


def extract_centroids(label: np.ndarray, num_classes: int, ignore_index: int = 255, min_area: int = 1) -> FileCentroids:
    """One point per connected component (8-connectivity) of each class with at least `min_area` pixels.

    Pixels equal to `ignore_index` or outside [0, num_classes) belong to no component.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"expected a 2-D label map, got shape {label.shape}")
    histogram = np.bincount(label.ravel(), minlength=256)[:num_classes].astype(np.int64)
    # shift classes by one so class 0 (CamVid's sky, Cityscapes' road) is not cc3d's background
    shift = np.zeros(256, np.uint16)
    shift[:num_classes] = np.arange(1, num_classes + 1)
    if 0 <= ignore_index < 256:
        shift[ignore_index] = 0
    shifted = shift[label]
    components, n = cc3d.connected_components(shifted, connectivity=8, return_N=True)
    if n == 0:
        empty = np.zeros(0, np.int32)
        return FileCentroids(empty.astype(np.int16), empty, empty, empty, histogram, label.shape)
    stats = cc3d.statistics(components, no_slice_conversion=True)
    area = stats["voxel_counts"][1:].astype(np.int64)
    keep = np.flatnonzero(area >= max(1, min_area)) + 1  # component ids
    centroid = stats["centroids"][keep]
    ys = np.clip(np.rint(centroid[:, 0]).astype(np.int64), 0, label.shape[0] - 1)
    xs = np.clip(np.rint(centroid[:, 1]).astype(np.int64), 0, label.shape[1] - 1)
    outside = np.flatnonzero(components[ys, xs] != keep)
    boxes = stats["bounding_boxes"]
    for k in outside:  # few components are non-convex enough for this; search only inside their bounding box
        cid = keep[k]
        y0, y1, x0, x1 = (int(v) for v in boxes[cid])
        py, px = np.nonzero(components[y0 : y1 + 1, x0 : x1 + 1] == cid)
        nearest = np.argmin((py + y0 - centroid[k, 0]) ** 2 + (px + x0 - centroid[k, 1]) ** 2)
        ys[k], xs[k] = py[nearest] + y0, px[nearest] + x0
    cls = shifted[ys, xs].astype(np.int16) - 1
    return FileCentroids(
        cls, ys.astype(np.int32), xs.astype(np.int32), area[keep - 1].astype(np.int32), histogram, label.shape
    )


def fingerprint(path: str | os.PathLike, lut: np.ndarray | None = None) -> str:
    """Cheap change detector for a label file: size and modification time (plus the id remap applied to it)."""
    st = os.stat(path)
    lut_tag = "" if lut is None else ":" + hashlib.sha1(np.ascontiguousarray(lut).tobytes()).hexdigest()[:10]
    return f"{st.st_size}:{st.st_mtime_ns}{lut_tag}"


def _read_and_extract(args) -> FileCentroids:
    path, lut, num_classes, ignore_index, min_area = args
    label = read_label(path, lut, num_classes=num_classes, ignore_index=ignore_index)
    return extract_centroids(label, num_classes, ignore_index, min_area)


@dataclass
class CentroidIndex:
    """Columnar centroid table over `files`; `image_id` indexes `files`."""

    files: list[str]
    fingerprints: list[str]
    num_classes: int
    ignore_index: int
    min_area: int
    image_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    cls: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    x: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    area: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    histograms: np.ndarray | None = None  # (num_files, num_classes) pixel counts
    shapes: np.ndarray | None = None  # (num_files, 2)

    def __len__(self) -> int:
        return int(self.cls.size)

    @property
    def num_images(self) -> int:
        return len(self.files)

    def components_per_class(self) -> np.ndarray:
        return np.bincount(self.cls.astype(np.int64), minlength=self.num_classes)[: self.num_classes]

    def pixels_per_class(self) -> np.ndarray:
        return (
            self.histograms.sum(0)
            if self.histograms is not None and len(self.files)
            else np.zeros(self.num_classes, np.int64)
        )

    def rows_of_class(self, c: int) -> np.ndarray:
        return np.flatnonzero(self.cls == c)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        buf = io.BytesIO()
        np.savez(
            buf,
            version=np.int32(INDEX_VERSION),
            files=np.array(self.files, dtype=str),
            fingerprints=np.array(self.fingerprints, dtype=str),
            num_classes=np.int32(self.num_classes),
            ignore_index=np.int32(self.ignore_index),
            min_area=np.int32(self.min_area),
            image_id=self.image_id,
            cls=self.cls,
            y=self.y,
            x=self.x,
            area=self.area,
            histograms=self.histograms,
            shapes=self.shapes,
        )
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> CentroidIndex:
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["version"]) != INDEX_VERSION:
                    raise DatasetError(f"{path}: centroid index version {int(z['version'])}, expected {INDEX_VERSION}")
                return cls(
                    files=[str(f) for f in z["files"]],
                    fingerprints=[str(f) for f in z["fingerprints"]],
                    num_classes=int(z["num_classes"]),
                    ignore_index=int(z["ignore_index"]),
                    min_area=int(z["min_area"]),
                    image_id=z["image_id"],
                    cls=z["cls"],
                    y=z["y"],
                    x=z["x"],
                    area=z["area"],
                    histograms=z["histograms"],
                    shapes=z["shapes"],
                )
        except FileNotFoundError:
            raise DatasetError(f"{path}: centroid index not found (build it with `csst-edge data index`)") from None
        except (OSError, ValueError, KeyError) as e:
            raise DatasetError(f"{path}: not a readable centroid index ({e})") from None


def _extract_all(
    files: list[str],
    luts: list,
    num_classes: int,
    ignore_index: int,
    min_area: int,
    workers: int,
    progress: bool,
    console=None,
) -> list[FileCentroids]:
    jobs = [(f, lut, num_classes, ignore_index, min_area) for f, lut in zip(files, luts, strict=False)]
    if not jobs:
        return []
    from csst_edge.progress import progress_bar

    bar = progress_bar("maps", console=console, transient=True) if progress else None
    results = []
    try:
        if bar:
            bar.start()
            task = bar.add_task("centroid index", total=len(jobs))
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for r in pool.map(_read_and_extract, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers)))):
                    results.append(r)
                    if bar:
                        bar.advance(task)
        else:
            for job in jobs:
                results.append(_read_and_extract(job))
                if bar:
                    bar.advance(task)
    finally:
        if bar:
            bar.stop()
    return results


def _assemble(files, fingerprints, per_file: list[FileCentroids], num_classes, ignore_index, min_area) -> CentroidIndex:
    counts = [r.cls.size for r in per_file]
    cat = lambda key, dtype: (
        np.concatenate([getattr(r, key) for r in per_file]).astype(dtype) if per_file else np.zeros(0, dtype)
    )
    return CentroidIndex(
        files=list(files),
        fingerprints=list(fingerprints),
        num_classes=num_classes,
        ignore_index=ignore_index,
        min_area=min_area,
        image_id=np.repeat(np.arange(len(per_file), dtype=np.int32), counts),
        cls=cat("cls", np.int16),
        y=cat("y", np.int32),
        x=cat("x", np.int32),
        area=cat("area", np.int32),
        histograms=np.stack([r.histogram for r in per_file]) if per_file else np.zeros((0, num_classes), np.int64),
        shapes=np.array([r.shape for r in per_file], np.int32).reshape(-1, 2),
    )


def _luts(files, luts):
    if luts is None:
        return [None] * len(files)
    if len(luts) != len(files):
        raise ValueError(f"got {len(luts)} LUTs for {len(files)} label files")
    return list(luts)


def build_index(
    files,
    num_classes: int,
    ignore_index: int = 255,
    min_area: int = 1,
    luts=None,
    workers: int = 1,
    progress: bool = True,
    console=None,
) -> CentroidIndex:
    """Read every label file (optionally remapped by its LUT) and index its components, in `workers` processes."""
    files = [str(f) for f in files]
    luts = _luts(files, luts)
    for f in files:
        if not os.path.isfile(f):
            raise DatasetError(f"{f}: label file not found")
    prints = [fingerprint(f, lut) for f, lut in zip(files, luts, strict=False)]
    per_file = _extract_all(files, luts, num_classes, ignore_index, min_area, workers, progress, console)
    return _assemble(files, prints, per_file, num_classes, ignore_index, min_area)


def _split_by_file(index: CentroidIndex) -> list[FileCentroids]:
    bounds = np.searchsorted(index.image_id, np.arange(index.num_images + 1))
    return [
        FileCentroids(
            index.cls[a:b], index.y[a:b], index.x[a:b], index.area[a:b], index.histograms[i], tuple(index.shapes[i])
        )
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=False))
    ]


def update_index(
    index: CentroidIndex, files, luts=None, workers: int = 1, progress: bool = True, console=None
) -> tuple[CentroidIndex, dict]:
    """The index of `files`, reusing `index` for files whose fingerprint is unchanged; only new or changed label
    files are read. Files missing from `files` are dropped. Returns (index, {"reused", "read", "dropped"})."""
    files = [str(f) for f in files]
    luts = _luts(files, luts)
    if not np.all(np.diff(index.image_id) >= 0):
        raise DatasetError("centroid index rows are not grouped by image; rebuild it")
    old = {f: (fp, r) for f, fp, r in zip(index.files, index.fingerprints, _split_by_file(index), strict=False)}
    prints = []
    for f, lut in zip(files, luts, strict=False):
        if not os.path.isfile(f):
            raise DatasetError(f"{f}: label file not found")
        prints.append(fingerprint(f, lut))
    stale = [i for i, (f, fp) in enumerate(zip(files, prints, strict=False)) if f not in old or old[f][0] != fp]
    fresh = _extract_all(
        [files[i] for i in stale],
        [luts[i] for i in stale],
        index.num_classes,
        index.ignore_index,
        index.min_area,
        workers,
        progress,
        console,
    )
    fresh_by_pos = dict(zip(stale, fresh, strict=False))
    per_file = [fresh_by_pos[i] if i in fresh_by_pos else old[f][1] for i, f in enumerate(files)]
    info = {"reused": len(files) - len(stale), "read": len(stale), "dropped": len(set(old) - set(files))}
    return _assemble(files, prints, per_file, index.num_classes, index.ignore_index, index.min_area), info


def settings_differ(index: CentroidIndex, num_classes: int, ignore_index: int, min_area: int) -> str | None:
    """How `index` was built with other settings than these ('min area 1, not 16'), or None when it was not."""
    differ = [
        f"{name} {old}, not {new}"
        for name, old, new in (
            ("classes", index.num_classes, num_classes),
            ("ignore index", index.ignore_index, ignore_index),
            ("min area", index.min_area, min_area),
        )
        if old != new
    ]
    return ", ".join(differ) or None


def build_or_update_index(
    files,
    num_classes: int,
    ignore_index: int = 255,
    min_area: int = 1,
    luts=None,
    previous: CentroidIndex | str | os.PathLike | None = None,
    workers: int = 1,
    progress: bool = True,
    console=None,
) -> tuple[CentroidIndex, dict]:
    """The index of `files` built with these settings, reusing `previous` (an index, or the path of one; a missing
    file means none) when it was built with the same settings: then only new or changed label files are read.

    An index built with another class count, ignore id or min area holds other components, so it is not reused
    (its rows would keep the old settings) and every file is read. Returns (index, {"reused", "read", "dropped"}),
    plus "rebuilt" saying which settings differed when `previous` was set aside.
    """
    if previous is not None and not isinstance(previous, CentroidIndex):
        previous = CentroidIndex.load(previous) if os.path.isfile(previous) else None
    differ = settings_differ(previous, num_classes, ignore_index, min_area) if previous is not None else None
    if previous is not None and differ is None:
        return update_index(previous, files, luts=luts, workers=workers, progress=progress, console=console)
    index = build_index(files, num_classes, ignore_index, min_area, luts, workers, progress, console)
    info = {"reused": 0, "read": index.num_images, "dropped": 0}
    if differ is not None:
        info["rebuilt"] = differ
    return index, info
