"""Fast crop schedules (the paper's coarse2fine / fine2coarse and their "+" variants).

The crop side changes over training while the pixels per batch stay about constant: a crop at scale s gets a
batch of base_batch / s^2 (capped by `max_batch`). With a fixed number of samples per epoch, small-crop epochs
run fewer iterations over fewer pixels, which is where the time goes; large-crop epochs keep the context that
the network needs at test time. The LR follows the pixels per batch (1.0 unless the cap bites), since the loss
is a mean over pixels and its gradient noise depends on how many pixels it averages.

- constant:      scale 1 every epoch
- coarse2fine:   ascending scales in equal blocks of epochs (small crops first)
- fine2coarse:   descending scales in equal blocks of epochs
- coarse2fine+:  ascending scales cycled every epoch (s0, s1, s2, s0, s1, s2, ...)
- fine2coarse+:  descending scales cycled every epoch
"""

from __future__ import annotations

from dataclasses import dataclass

from csst_edge.errors import ConfigError

SCHEDULES = ("constant", "coarse2fine", "fine2coarse", "coarse2fine+", "fine2coarse+")
CROP_MULTIPLE = 32  # crops stay divisible by the models' output stride


@dataclass(frozen=True)
class EpochCrop:
    scale: float
    crop_h: int
    crop_w: int
    batch_size: int
    lr_scale: float


class CropSchedule:
    def __init__(
        self,
        kind: str,
        base_crop: tuple[int, int],
        base_batch: int,
        epochs: int,
        scales=(0.5, 0.75, 1.0),
        max_batch: int | None = None,
    ):
        if kind not in SCHEDULES:
            raise ConfigError(f"config key 'crop_schedule' is '{kind}': expected one of {', '.join(SCHEDULES)}")
        if not scales or any(s <= 0 for s in scales):
            raise ConfigError(f"config key 'crop_scales' must be positive numbers, got {list(scales)}")
        self.kind, self.base_crop, self.base_batch, self.epochs = kind, tuple(base_crop), int(base_batch), int(epochs)
        self.scales = sorted(float(s) for s in scales)
        self.max_batch = max_batch

    def scale_at(self, epoch: int) -> float:
        if self.kind == "constant":
            return 1.0
        order = self.scales if self.kind.startswith("coarse2fine") else self.scales[::-1]
        if self.kind.endswith("+"):
            return order[epoch % len(order)]
        block = min(len(order) - 1, epoch * len(order) // max(1, self.epochs))
        return order[block]

    def at(self, epoch: int) -> EpochCrop:
        s = self.scale_at(epoch)
        if s == 1.0:  # the base crop is the user's, used as given
            crop_h, crop_w = self.base_crop
        else:
            crop_h = max(CROP_MULTIPLE, round(self.base_crop[0] * s / CROP_MULTIPLE) * CROP_MULTIPLE)
            crop_w = max(CROP_MULTIPLE, round(self.base_crop[1] * s / CROP_MULTIPLE) * CROP_MULTIPLE)
        pixel_ratio = (self.base_crop[0] * self.base_crop[1]) / (crop_h * crop_w)
        batch = max(1, round(self.base_batch * pixel_ratio))
        if self.max_batch:
            batch = min(batch, max(self.base_batch, int(self.max_batch)))
        lr_scale = batch * crop_h * crop_w / (self.base_batch * self.base_crop[0] * self.base_crop[1])
        return EpochCrop(s, crop_h, crop_w, batch, round(min(1.0, lr_scale), 4))

    def plan(self) -> list[EpochCrop]:
        return [self.at(e) for e in range(self.epochs)]
