"""Synthetic driving scenes with the 19 Cityscapes classes, in two 'cities' (domains), and a dashcam video.

    image, label = render_scene(seed, "A")                       # one 256x512 frame, labels 0..18
    write_dataset("data/synth", cities=("A", "B"), train=200, val=50)   # -> {"A": data/synth/cityA.yaml, ...}
    write_video("data/synth/cityB_drive.mp4", city="B", frames=300, labels_dir="data/synth/cityB_drive_labels")

Scenes are procedural perspective streets: `world` places things in road coordinates, `render` draws them
through a dashcam, `style` holds what differs between the two cities (palette, lighting/weather, layout), and
`scenes` turns them into frames, datasets and the video. Class frequencies are long-tailed like Cityscapes:
road, building, sky and vegetation cover most pixels; train, motorcycle and rider are rare.
"""

from csst_edge.data.synth.scenes import (
    CLASS_NAMES,
    GENERATOR_VERSION,
    IMAGE_EXT,
    JPEG_QUALITY,
    PALETTE,
    SPLITS,
    class_pixel_shares,
    dataset_yaml,
    frame_rng,
    render_scene,
    write_dataset,
    write_video,
)

__all__ = [
    "render_scene",
    "write_dataset",
    "write_video",
    "frame_rng",
    "class_pixel_shares",
    "dataset_yaml",
    "CLASS_NAMES",
    "PALETTE",
    "GENERATOR_VERSION",
    "IMAGE_EXT",
    "JPEG_QUALITY",
    "SPLITS",
]
