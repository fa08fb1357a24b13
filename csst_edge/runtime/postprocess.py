"""The model's output → what the runtime needs: class ids for the overlay and the log, probabilities for the
harvester's uncertainty score.

Per-frame statistics (class shares, entropy, low-confidence share) are computed on a strided view of the output
(`analysis_stride`, default 4: 1/16 of the pixels). They are means over hundreds of thousands of pixels, so the
subsample changes them by well under a percent, and it keeps the per-frame cost of a 19-class 512x1024 output
(10M floats) from rivalling the inference itself. Full-resolution class ids are computed only when something
draws them (overlay video, display).
"""

from __future__ import annotations

import numpy as np

from csst_edge.runtime.model_meta import ModelMeta


class Prediction:
    """One frame's model output, with lazily computed views."""

    def __init__(self, output: np.ndarray, meta: ModelMeta, analysis_stride: int = 4):
        # output: the model's output for ONE frame: C x H x W (logits / probs) or H x W (labels)
        self.output = output
        self.kind = meta.output_kind
        self.num_classes = meta.num_classes
        self.stride = max(1, int(analysis_stride))
        self._labels: np.ndarray | None = None
        self._small_probs: np.ndarray | None = None
        self._small_labels: np.ndarray | None = None

    @property
    def has_probabilities(self) -> bool:
        return self.kind in ("logits", "probs")

    def labels(self) -> np.ndarray:
        """Full-resolution class ids (model size), H x W uint8."""
        if self._labels is None:
            if self.kind == "labels":
                self._labels = self.output.astype(np.uint8, copy=False)
            else:
                self._labels = channel_argmax(self.output)
        return self._labels

    def small_probs(self) -> np.ndarray | None:
        """Probabilities C x h x w on the strided grid (softmax of logits), or None for a labels-only model."""
        if not self.has_probabilities:
            return None
        if self._small_probs is None:
            s = self.stride
            small = np.ascontiguousarray(self.output[:, ::s, ::s], dtype=np.float32)
            if self.kind == "logits":
                small = small - small.max(axis=0, keepdims=True)
                np.exp(small, out=small)
                small /= small.sum(axis=0, keepdims=True)
            self._small_probs = small
        return self._small_probs

    def small_labels(self) -> np.ndarray:
        """Class ids on the strided grid (h x w uint8): class shares, rare-class presence."""
        if self._small_labels is None:
            if self._labels is not None or self.kind == "labels":
                self._small_labels = self.labels()[:: self.stride, :: self.stride]
            else:
                self._small_labels = channel_argmax(self.small_probs())
        return self._small_labels

    def class_shares(self) -> np.ndarray:
        """Share of pixels predicted as each class (float64, sums to 1)."""
        labels = self.small_labels()
        counts = np.bincount(labels.ravel(), minlength=self.num_classes)[: self.num_classes]
        return counts / max(1, counts.sum())


def channel_argmax(scores: np.ndarray) -> np.ndarray:
    """argmax over the first axis of C x h x w scores as uint8, the first class winning ties (as np.argmax).
    The per-pixel maximum is one vectorised pass; marking each class where it reaches it, from the last class
    down, leaves the first. About 3x faster than np.argmax(axis=0), which walks the short axis C per pixel."""
    top = scores.max(axis=0)
    labels = np.full(top.shape, scores.shape[0] - 1, np.uint8)
    for c in range(scores.shape[0] - 2, -1, -1):
        np.copyto(labels, c, where=scores[c] == top)
    return labels
