"""Which samples of a split a run uses: a `SourceConfig` names the dataset (or pseudo-label folder) and split,
`select` applies its every/offset/complement, shots and limit to the split's samples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from csst_edge.errors import ConfigError


@dataclass
class SourceConfig:
    """One training source. `data` is a dataset YAML (or built-in name); `pseudo` is a pseudo-label output
    folder (its manifest.jsonl lists image + label pairs). `every`/`offset` select index % every == offset of
    the split sorted by name (`complement` takes the others): the camvid-quarter protocol is every=4, offset=0.
    `block` > 1 applies them to runs of `block` consecutive samples instead of single ones (every=4, block=8:
    8 frames kept, 24 left out, and so on), so the frames left out are further from the ones kept.
    `shots` then keeps k images chosen by a `shots_seed`-seeded permutation (few-shot transfer); the choice is
    nested (the k=1 image is in the k=2 set) and recorded in config.yaml, so a few-shot run is reproducible."""

    data: str | None = None
    split: str = "train"
    pseudo: str | None = None
    every: int = 1
    offset: int = 0
    block: int = 1
    complement: bool = False
    limit: int | None = None  # first N samples after selection (quick experiments, tests)
    shots: int | None = None  # k labelled images for few-shot finetuning (applied after every/offset, before limit)
    shots_seed: int = 0


def select(samples: list, src: SourceConfig) -> list:
    """Apply every/offset/block/complement, then shots, then limit to a name-sorted list (camvid-quarter: every=4,
    offset=0; few-shot: shots=k)."""
    keep = [s for i, s in enumerate(samples) if ((i // src.block) % src.every == src.offset) != src.complement]
    if src.shots is not None:
        keep = select_shots(keep, src.shots, src.shots_seed, where=f"{src.data or src.pseudo} split '{src.split}'")
    return keep[: src.limit] if src.limit else keep


def sample_name(sample) -> str:
    """The name of a sample, a (name, ...) tuple or a plain name."""
    if hasattr(sample, "name"):
        return str(sample.name)
    if isinstance(sample, (tuple, list)):
        return str(sample[0])
    return str(sample)


def select_shots(samples: Sequence, k: int, seed: int = 0, where: str = "the split") -> list:
    """k samples of a split, deterministic in (the split's names, seed) and nested in k.

    The split is sorted by name first (so the order files were listed in does not matter), permuted with a
    seeded generator, and the first k of the permutation are kept; they are returned in name order.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"shots must be a positive integer, got {k!r}")
    ordered = sorted(samples, key=sample_name)
    if k > len(ordered):
        raise ConfigError(f"{where}: shots={k} but it has only {len(ordered)} image(s)")
    perm = np.random.default_rng([int(seed), 4242]).permutation(len(ordered))
    return [ordered[i] for i in sorted(perm[: int(k)].tolist())]
