import numpy as np
import pytest

from csst_edge.data.transforms import (
    ColorJitter,
    Compose,
    RandomCrop,
    RandomGaussianBlur,
    RandomHorizontalFlip,
    RandomScale,
    normalize,
    train_transforms,
)


def _pair(h=60, w=80):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    label = (np.arange(h * w).reshape(h, w) % 7).astype(np.uint8)
    return image, label


def test_scale_resizes_label_with_nearest_neighbour():
    image, label = _pair()
    for seed in range(5):
        img, lab, _ = RandomScale(0.5, 2.0)(image, label, None, np.random.default_rng(seed))
        assert img.shape[:2] == lab.shape and lab.dtype == np.uint8
        assert set(np.unique(lab)) <= set(np.unique(label))  # no interpolated ids


def test_crop_pads_with_ignore():
    image, label = _pair(20, 30)
    img, lab, _ = RandomCrop((32, 40), ignore_index=255)(image, label, None, np.random.default_rng(0))
    assert img.shape == (32, 40, 3) and lab.shape == (32, 40)
    assert (lab[20:, :] == 255).all() and (lab[:, 30:] == 255).all()
    assert (lab[:20, :30] == label).all()


@pytest.mark.parametrize("seed", range(50))
def test_anchor_stays_inside_the_crop_through_the_whole_pipeline(seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(20, 200)), int(rng.integers(20, 200))
    image = np.zeros((h, w, 3), np.uint8)
    label = np.zeros((h, w), np.uint8)
    y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
    label[y, x] = 9  # one marked pixel: it must survive into the crop
    crop = (int(rng.integers(8, 128)), int(rng.integers(8, 128)))
    pipeline = Compose([RandomScale(1.0, 1.0), RandomCrop(crop), RandomHorizontalFlip(0.5)])
    _, lab, anchor = pipeline(image, label, (y, x), rng)
    assert lab.shape == crop
    assert 0 <= anchor[0] < crop[0] and 0 <= anchor[1] < crop[1]
    assert lab[anchor] == 9


@pytest.mark.parametrize("seed", range(20))
def test_anchor_tracks_scaling(seed):
    rng = np.random.default_rng(seed)
    image, label = _pair(90, 120)
    label = np.zeros_like(label)
    label[40:50, 60:70] = 3  # a 10x10 object; its centre pixel must stay on the object after any scale
    _, lab, anchor = RandomScale(0.5, 2.0)(image, label, (45, 65), rng)
    assert lab[anchor] == 3


def test_flip_and_photometric_leave_labels_alone():
    image, label = _pair()
    _, lab, _ = RandomHorizontalFlip(1.0)(image, label, None, np.random.default_rng(0))
    assert (lab == label[:, ::-1]).all()
    for t in (RandomGaussianBlur(1.0), ColorJitter(0.1, 0.1, 0.1)):
        img, lab, _ = t(image, label, None, np.random.default_rng(1))
        assert img.shape == image.shape and img.dtype == np.uint8 and (lab == label).all()
        assert not np.array_equal(img, image)


def test_same_seed_same_sample():
    image, label = _pair()
    t = train_transforms((32, 32))
    a = t(image, label, (10, 10), np.random.default_rng(3))
    b = t(image, label, (10, 10), np.random.default_rng(3))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_normalize_matches_formula():
    image = np.array([[[255, 0, 128]]], np.uint8)
    out = normalize(image, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    assert out.shape == (3, 1, 1)
    np.testing.assert_allclose(
        out[:, 0, 0], [(1 - 0.5) / 0.25, (0 - 0.5) / 0.5, (128 / 255 - 0.5) / 1.0], rtol=1e-6, atol=1e-6
    )


def test_multichannel_label_gets_the_same_geometry():
    image, label = _pair(30, 40)
    soft = np.stack([label, 255 - label], axis=-1)  # e.g. top-1 id + quantised probability
    t = train_transforms((48, 48), ignore_index=(255, 0), blur=0, jitter=0)
    _, lab, _ = t(image, soft, None, np.random.default_rng(4))
    assert lab.shape == (48, 48, 2)
    pad = lab[..., 0] == 255
    assert (lab[..., 1][pad] == 0).all()  # padding used the per-channel fill
    valid = ~pad
    assert (lab[..., 1][valid] == 255 - lab[..., 0][valid]).all()  # channels moved together
