"""csst-edge: centroid-sampling self-training for real-time semantic segmentation."""

__version__ = "0.1.0"
