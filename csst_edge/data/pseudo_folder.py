"""Reading a `pseudo-label` output folder (meta.json + one manifest*.jsonl per rank) as a data source.

`csst_edge.pseudo` writes these folders; training, the round and the label statistics read them through here,
so the data layer does not depend on the pseudo-labelling code above it.

The folder may be a URL (s3://bucket/pseudo/r01): its label maps (and the images the manifest names, when those
are URLs too) are then fetched into the local cache (`csst_edge.storage.cache_files`, $CSST_CACHE) and the local
copies are returned, so training reads local files in its DataLoader workers as it always does; a second run
fetches only what changed. Training straight from the bucket would fetch every crop's image again every epoch.
"""

from __future__ import annotations

from pathlib import Path

from csst_edge import storage
from csst_edge.errors import DatasetError


def manifest_files(out_dir) -> list[Path | str]:
    """Every manifest of a pseudo-label folder: one per torchrun rank, plus the parts an object-store run has not
    folded in yet (see storage.ManifestWriter)."""
    return storage.glob(storage.join(out_dir, "manifest*.jsonl"))


def _finished(rec: dict) -> bool:
    """A finished row whose label (and soft label) is a safe relative path inside the folder; anything else (no
    name, no label, `../x.png`, an absolute path) is skipped, never read."""
    if rec.get("status") != "ok" or not isinstance(rec.get("name"), str) or not isinstance(rec.get("image"), str):
        return False
    return storage.safe_relative(rec.get("label")) is not None and (
        not rec.get("soft") or storage.safe_relative(rec.get("soft")) is not None
    )


def read_pseudo_manifest(folder) -> tuple[list[tuple[str, Path, Path, Path | None]], dict]:
    """(name, image, label, soft) of every finished pseudo label in a `pseudo-label` output folder, plus its meta.
    For a URL folder the paths are local cached copies."""
    folder = storage.as_location(folder)
    if isinstance(folder, str):
        return _read_remote(folder)
    meta_path = folder / "meta.json"
    manifests = manifest_files(folder)
    if not meta_path.is_file() or not manifests:
        raise DatasetError(f"{folder}: not a pseudo-label folder (needs meta.json and manifest.jsonl)")
    meta = storage.read_json(meta_path)
    pairs = {}
    for manifest in manifests:
        for rec in storage.read_jsonl(manifest):
            if (
                _finished(rec)
                and storage.inside(folder, rec["label"]) is not None
                and (folder / rec["label"]).is_file()
            ):
                soft = folder / rec["soft"] if rec.get("soft") else None
                pairs[rec["name"]] = (rec["name"], storage.as_location(rec["image"]), folder / rec["label"], soft)
    if not pairs:
        raise DatasetError(f"{folder}/manifest.jsonl: no finished pseudo labels")
    out = [pairs[k] for k in sorted(pairs)]
    remote = [i for i, p in enumerate(out) if isinstance(p[1], str)]  # labels from bucket images: cache them
    for i, local in zip(remote, storage.cache_files([out[i][1] for i in remote]), strict=True):
        out[i] = (out[i][0], local, out[i][2], out[i][3])
    return out, meta


def _read_remote(folder: str) -> tuple[list[tuple[str, Path, Path, Path | None]], dict]:
    where = storage.redact(folder)
    listing = storage.find(folder, detail=True)  # one listing: what exists, and the sizes / ETags the cache checks
    manifests = [f for f in listing if storage.name_of(f).startswith("manifest") and str(f).endswith(".jsonl")]
    if storage.join(folder, "meta.json") not in listing or not manifests:
        raise DatasetError(f"{where}: not a pseudo-label folder (needs meta.json and manifest.jsonl)")
    meta = storage.read_json(storage.join(folder, "meta.json"))
    records = {}
    for manifest in sorted(manifests):
        for rec in storage.read_jsonl(manifest):
            if _finished(rec) and storage.join(folder, rec["label"]) in listing:
                records[rec["name"]] = rec
    if not records:
        raise DatasetError(f"{where}/manifest.jsonl: no finished pseudo labels")
    names = sorted(records)
    labels = storage.cache_files([storage.join(folder, records[n]["label"]) for n in names], listing)
    softs = [storage.join(folder, records[n]["soft"]) for n in names if records[n].get("soft")]
    soft_local = dict(zip(softs, storage.cache_files(softs, listing), strict=True))
    images = [_image_location(folder, records[n]["image"]) for n in names]
    # images under the folder (saved video frames) are checked against the listing; others are content-named
    # harvest / sync objects that never change, so a cached copy stands
    image_local = storage.cache_files(images, listing)
    out = []
    for n, label, image in zip(names, labels, image_local, strict=True):
        soft = soft_local.get(storage.join(folder, records[n]["soft"])) if records[n].get("soft") else None
        out.append((n, image, label, soft))
    return out, meta


def _image_location(folder: str, image: str):
    """The manifest's image: a URL or an absolute path as it is; a relative path is relative to the folder."""
    if storage.is_url(image) or Path(image).is_absolute():
        return storage.as_location(image)
    return storage.join(folder, image)
