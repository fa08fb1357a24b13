"""Pseudo-label generation: teacher predictions on unlabelled images as hard (or top-k soft) labels."""

from csst_edge.pseudo.generate import PseudoLabelSettings, generate_pseudo_labels, read_soft_label

__all__ = ["PseudoLabelSettings", "generate_pseudo_labels", "read_soft_label"]
