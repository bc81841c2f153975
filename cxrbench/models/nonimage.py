"""The paper's models with non-image features (Sec. 2.3): age, sex and view through Linear(5, 3) + ReLU,
concatenated with the image features before the classifier."""

from __future__ import annotations

import torch
from torch import nn

from cxrbench.models.attention import DenseNetAttention
from cxrbench.models.densenet import densenet121_features, global_feature
from cxrbench.models.layers import NonImageBranch, require_features, xavier_
from cxrbench.models.registry import register_model


class DenseNet121NonImage(nn.Module):
    """DenseNet-121 whose classifier sees g (1024) and the non-image branch (3)."""

    def __init__(self, num_classes: int = 15, pretrained: bool | str = False) -> None:
        super().__init__()
        self.features, self.cxrbench_weights = densenet121_features(pretrained)
        self.nonimage = NonImageBranch()
        self.classifier = xavier_(nn.Linear(1024 + self.nonimage.out_features, num_classes))

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        z = torch.cat([global_feature(self.features(x)), self.nonimage(require_features(features, "this model"))], 1)
        return self.classifier(z)


@register_model(cam_layer="features.norm5", nonimage=True)
def densenet121_nonimage(num_classes: int = 15, pretrained: bool | str = False) -> nn.Module:
    """DenseNet-121 + age, sex and view (the paper's Fig. 4)."""
    return DenseNet121NonImage(num_classes, pretrained)


@register_model(cam_layer="features.transition3", nonimage=True, attention=True)
def densenet121_attA_nonimage(num_classes: int = 15, pretrained: bool | str = False) -> nn.Module:
    """DenseNet-121-attA + age, sex and view."""
    return DenseNetAttention(num_classes, pretrained, "A", nonimage=True)
