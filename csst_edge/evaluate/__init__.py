"""Evaluation: confusion matrix and mIoU, single / multi-scale + flip / sliding-window inference, reports."""

from csst_edge.evaluate.evaluator import evaluate
from csst_edge.evaluate.inference import predict_logits
from csst_edge.evaluate.metrics import ConfusionMatrix

__all__ = ["ConfusionMatrix", "evaluate", "predict_logits"]
