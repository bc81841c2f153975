"""DenseNet-121 (torchvision's architecture) with a `num_classes` classifier, as in CheXNet and the paper."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cxrbench.models.layers import xavier_
from cxrbench.models.registry import register_model


def densenet121_features(pretrained: bool | str) -> tuple[nn.Sequential, dict]:
    """torchvision's DenseNet-121 feature extractor (ends with norm5), with ImageNet weights if asked."""
    import torchvision

    feats = torchvision.models.densenet121(weights=None).features
    prov: dict = {"pretrained": False}
    if pretrained:
        from cxrbench.models.weights import load_backbone

        prov = load_backbone(feats, "densenet121", pretrained, prefix="features.", skip=())
    return feats, prov


def global_feature(norm5: torch.Tensor) -> torch.Tensor:
    """g: DenseNet's pooled 1024-vector before its classifier (ReLU, global average pool)."""
    return torch.flatten(F.adaptive_avg_pool2d(F.relu(norm5), 1), 1)


class DenseNet121(nn.Module):
    """DenseNet-121 with a new Linear(1024, C) classifier (Xavier-normal init)."""

    def __init__(self, num_classes: int = 15, pretrained: bool | str = False) -> None:
        super().__init__()
        self.features, self.cxrbench_weights = densenet121_features(pretrained)
        self.classifier = xavier_(nn.Linear(1024, num_classes))

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(global_feature(self.features(x)))


@register_model(cam_layer="features.norm5")
def densenet121(num_classes: int = 15, pretrained: bool | str = False) -> nn.Module:
    """DenseNet-121 (CheXNet's backbone); 6,969,231 parameters at 15 classes."""
    return DenseNet121(num_classes, pretrained)
