import cv2
import numpy as np
import pytest
import yaml
from conftest import set_id_remap

from csst_edge.data.dataset import (
    CITYSCAPES_LABELID_TO_TRAINID,
    list_samples,
    load_dataset_config,
    load_pair,
    validate_split,
)
from csst_edge.data.imageio import check_label_ids, read_label
from csst_edge.data.unlabelled import expand_sources, load_item
from csst_edge.errors import ConfigError, DatasetError


def test_folder_layout_pairs(tiny_dataset):
    cfg = load_dataset_config(tiny_dataset)
    samples = list_samples(cfg, "train")
    assert [s.name for s in samples] == ["img00", "img01", "img02", "img03"]
    image, label = load_pair(cfg, samples[0])
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert label.shape == (48, 64) and set(np.unique(label)) <= {0, 1, 2}
    assert validate_split(cfg, "val") == 4


def test_missing_label_names_file(tiny_dataset):
    (tiny_dataset.parent / "labels" / "train" / "img01.png").unlink()
    with pytest.raises(DatasetError, match=r"img01\.png: label file missing"):
        list_samples(load_dataset_config(tiny_dataset), "train")


def test_size_mismatch_names_file(tiny_dataset):
    cv2.imwrite(str(tiny_dataset.parent / "labels" / "train" / "img02.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match=r"img02\.png: label size 10x10 does not match"):
        validate_split(load_dataset_config(tiny_dataset), "train")


def test_class_id_out_of_range_names_file(tiny_dataset):
    label = np.full((48, 64), 7, np.uint8)
    cv2.imwrite(str(tiny_dataset.parent / "labels" / "train" / "img03.png"), label)
    with pytest.raises(DatasetError, match=r"img03\.png: class id\(s\) 7 out of range") as e:
        validate_split(load_dataset_config(tiny_dataset), "train")
    assert "3 classes" in str(e.value) and "id_remap: {7: 255}" in str(e.value)
    set_id_remap(tiny_dataset, {7: 255})  # the way out the message names
    assert validate_split(load_dataset_config(tiny_dataset), "train") == 4


def test_check_label_ids_accepts_classes_and_ignore_and_lists_the_rest(tmp_path):
    label = np.array([[0, 1, 2, 255], [2, 1, 0, 255]], np.uint8)
    check_label_ids(label, 3, 255, "ok.png")  # classes and the ignore id only: no error
    assert read_label(_png(tmp_path / "ok.png", label), num_classes=3).tolist() == label.tolist()
    label[0, :2] = [200, 3]
    with pytest.raises(DatasetError, match=r"bad\.png: class id\(s\) 3, 200 out of range \(2 pixels\)"):
        read_label(_png(tmp_path / "bad.png", label), num_classes=3, ignore_index=255)
    remap = np.arange(256, dtype=np.uint8)
    remap[[3, 200]] = 255
    assert read_label(tmp_path / "bad.png", remap, num_classes=3).max() == 255  # checked after the remap


def _png(path, label):
    cv2.imwrite(str(path), label)
    return path


def test_corrupt_image_names_file(tiny_dataset):
    (tiny_dataset.parent / "images" / "train" / "img00.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match=r"img00\.png: not a readable image"):
        validate_split(load_dataset_config(tiny_dataset), "train")


def test_empty_split(tiny_dataset):
    for p in (tiny_dataset.parent / "images" / "val").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match="split 'val' has no images"):
        list_samples(load_dataset_config(tiny_dataset), "val")


def test_unknown_key_and_split(tiny_dataset):
    raw = yaml.safe_load(tiny_dataset.read_text())
    raw["colour"] = 1
    tiny_dataset.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="unknown key.*colour"):
        load_dataset_config(tiny_dataset)
    del raw["colour"]
    tiny_dataset.write_text(yaml.safe_dump(raw))
    with pytest.raises(DatasetError, match="unknown split 'test'"):
        list_samples(load_dataset_config(tiny_dataset), "test")


def test_cityscapes_layout_remaps_label_ids(tmp_path):
    root = tmp_path / "cs"
    (root / "leftImg8bit" / "val" / "ulm").mkdir(parents=True)
    (root / "gtFine" / "val" / "ulm").mkdir(parents=True)
    cv2.imwrite(
        str(root / "leftImg8bit" / "val" / "ulm" / "ulm_000000_000019_leftImg8bit.png"), np.zeros((8, 8, 3), np.uint8)
    )
    ids = np.array(
        [[7, 8, 26, 0, 33, 1, 24, 11]] * 8, np.uint8
    )  # road sidewalk car unlabeled bicycle ego person building
    cv2.imwrite(str(root / "gtFine" / "val" / "ulm" / "ulm_000000_000019_gtFine_labelIds.png"), ids)
    (tmp_path / "cs.yaml").write_text(
        yaml.safe_dump(
            {"root": "cs", "layout": "cityscapes", "splits": {"val": "val"}, "classes": [f"c{i}" for i in range(19)]}
        )
    )
    cfg = load_dataset_config(tmp_path / "cs.yaml")
    (sample,) = list_samples(cfg, "val")
    assert sample.name == "ulm/ulm_000000_000019"
    _, label = load_pair(cfg, sample)
    assert label[0].tolist() == [0, 1, 13, 255, 18, 255, 11, 2]
    assert len(CITYSCAPES_LABELID_TO_TRAINID) == 19


def test_camvid_segnet_layout(tmp_path):
    for d in ("train", "trainannot"):
        (tmp_path / d).mkdir()
    cv2.imwrite(str(tmp_path / "train" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "trainannot" / "a.png"), np.full((4, 4), 11, np.uint8))
    (tmp_path / "d.yaml").write_text(
        yaml.safe_dump(
            {
                "root": ".",
                "layout": "camvid-segnet",
                "splits": ["train"],
                "classes": [f"c{i}" for i in range(11)],
                "id_remap": {11: 255},
            }
        )
    )
    cfg = load_dataset_config(tmp_path / "d.yaml")
    _, label = load_pair(cfg, list_samples(cfg, "train")[0])
    assert (label == 255).all()


def test_builtin_camvid(camvid_root, monkeypatch):
    monkeypatch.setenv("CSST_CAMVID_ROOT", str(camvid_root))
    cfg = load_dataset_config("camvid")
    assert cfg.num_classes == 11 and cfg.root == camvid_root
    assert len(list_samples(cfg, "train")) == 367 and len(list_samples(cfg, "val")) == 101
    image, label = load_pair(cfg, list_samples(cfg, "val")[0])
    assert image.shape == (360, 480, 3) and label.max() == 255 and 11 not in label


def test_unlabelled_sources(tmp_path):
    folder = tmp_path / "imgs" / "sub"
    folder.mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.jpg"), np.full((8, 8, 3), i * 40, np.uint8))
    video = tmp_path / "drive.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 16))
    for i in range(20):
        writer.write(np.full((16, 32, 3), i * 12, np.uint8))
    writer.release()
    listing = tmp_path / "list.txt"
    listing.write_text("imgs/sub/1.jpg\n# comment\n")
    items = expand_sources([tmp_path / "imgs", video, listing], video_fps=5)
    names = [i.name for i in items]
    assert names[:3] == ["sub/0", "sub/1", "sub/2"]
    assert names[3:13] == [f"drive/f{f:06d}" for f in range(0, 20, 2)]
    assert names[13:] == ["imgs/sub/1"]
    frame = load_item(items[5])  # frame 4 of the video: grey level ~48
    assert frame.shape == (16, 32, 3) and abs(int(frame.mean()) - 48) < 8
    with pytest.raises(DatasetError, match="nothing.txt: unlabelled source not found"):
        expand_sources([tmp_path / "nothing.txt"])
    (tmp_path / "bad.txt").write_text("missing.jpg\n")
    with pytest.raises(DatasetError, match=r"bad\.txt:1: listed file .*missing\.jpg not found"):
        expand_sources([tmp_path / "bad.txt"])


def test_a_missing_builtin_dataset_says_which_variable_points_at_it(monkeypatch, tmp_path):
    from csst_edge.data.dataset import list_samples, load_dataset_config
    from csst_edge.errors import DatasetError

    monkeypatch.setenv("CSST_CAMVID_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="set CSST_CAMVID_ROOT to a CamVid copy"):
        list_samples(load_dataset_config("camvid"), "train")
