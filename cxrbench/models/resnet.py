"""ResNet-50 (torchvision's architecture) with a `num_classes` classifier."""

from __future__ import annotations

import torch
from torch import nn

from cxrbench.models.layers import xavier_
from cxrbench.models.registry import register_model


class ResNet50(nn.Module):
    """ResNet-50 with a new Linear(2048, C) classifier (Xavier-normal init)."""

    def __init__(self, num_classes: int = 15, pretrained: bool | str = False) -> None:
        super().__init__()
        import torchvision

        self.backbone = torchvision.models.resnet50(weights=None)
        self.backbone.fc = nn.Identity()
        self.cxrbench_weights: dict = {"pretrained": False}
        if pretrained:
            from cxrbench.models.weights import load_backbone

            self.cxrbench_weights = load_backbone(self.backbone, "resnet50", pretrained, prefix="", skip=("fc.",))
        self.fc = xavier_(nn.Linear(2048, num_classes))

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(self.backbone(x))


@register_model(cam_layer="backbone.layer4")
def resnet50(num_classes: int = 15, pretrained: bool | str = False) -> nn.Module:
    """ResNet-50 (Wang et al.'s best model); 23,538,767 parameters at 15 classes."""
    return ResNet50(num_classes, pretrained)
