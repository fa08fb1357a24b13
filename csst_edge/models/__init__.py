"""Segmentation models: students (fastscnn, bisenet_r18, icnet_r18, icnet_r50) and teachers (deeplabv3plus_*).

    from csst_edge.models import create_model, list_models
    model = create_model("bisenet_r18", num_classes=11, pretrained="resnet18.pth")

Every model returns logits at the input resolution in eval mode and `(main, [aux, ...])` in train mode, with one
loss weight per aux output in `model.aux_weights` (see `csst_edge.models.base`).
"""

# importing the model modules runs their @register_model decorators
from csst_edge.models import bisenet, deeplabv3plus, efficientnet_lite, fastscnn, icnet  # noqa: F401
from csst_edge.models.base import SegmentationModel
from csst_edge.models.registry import create_model, list_models, model_kind, register_model

__all__ = ["SegmentationModel", "create_model", "list_models", "model_kind", "register_model"]
