"""Reading a `pseudo-label` output folder (meta.json + one manifest*.jsonl per rank) as a data source.

`csst_edge.pseudo` writes these folders; training, the round and the label statistics read them through here,
so the data layer does not depend on the pseudo-labelling code above it."""

from __future__ import annotations

import json
from pathlib import Path

from csst_edge.errors import DatasetError
from csst_edge.fileio import read_jsonl


def manifest_files(out_dir: Path) -> list[Path]:
    return sorted(Path(out_dir).glob("manifest*.jsonl"))  # one per torchrun rank


def read_pseudo_manifest(folder: Path) -> tuple[list[tuple[str, Path, Path, Path | None]], dict]:
    """(name, image, label, soft) of every finished pseudo label in a `pseudo-label` output folder, plus its meta."""
    meta_path = folder / "meta.json"
    manifests = manifest_files(folder)
    if not meta_path.is_file() or not manifests:
        raise DatasetError(f"{folder}: not a pseudo-label folder (needs meta.json and manifest.jsonl)")
    meta = json.loads(meta_path.read_text())
    pairs = {}
    for manifest in manifests:
        for rec in read_jsonl(manifest):
            if rec.get("status") == "ok" and (folder / rec["label"]).is_file():
                soft = folder / rec["soft"] if rec.get("soft") else None
                pairs[rec["name"]] = (rec["name"], Path(rec["image"]), folder / rec["label"], soft)
    if not pairs:
        raise DatasetError(f"{folder}/manifest.jsonl: no finished pseudo labels")
    return [pairs[k] for k in sorted(pairs)], meta
