"""Tiny registered models (a few thousand parameters) that exercise the same interfaces as the paper's
models (CAM layer, attention maps, non-image features), so that CPU tests and the quickstart run in seconds."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cxrbench.models.layers import NonImageBranch, require_features, softmax_dtype, xavier_
from cxrbench.models.registry import register_model


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=False)
    )


class TinyCNN(nn.Module):
    """Three strided conv blocks (8, 16, 32 channels), global average pool, linear classifier."""

    def __init__(self, num_classes: int = 15, pretrained: bool | str = False) -> None:
        super().__init__()
        if pretrained:
            from cxrbench.errors import WeightsUnavailable

            raise WeightsUnavailable("tiny models have no pretrained weights; run with --no-pretrained")
        self.features = nn.Sequential()
        self.features.add_module("b1", _block(3, 8))
        self.features.add_module("b2", _block(8, 16))
        self.features.add_module("b3", _block(16, 32))
        xavier_(self.features)
        self.classifier = xavier_(nn.Linear(32, num_classes))
        self.cxrbench_weights = {"pretrained": False}

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class TinyAttention(TinyCNN):
    """TinyCNN with attA-style attention over b2 and b3 and the non-image branch."""

    def __init__(self, num_classes: int = 15, pretrained: bool | str = False) -> None:
        super().__init__(num_classes, pretrained)
        self.project = xavier_(nn.ModuleList([nn.Conv2d(16, 32, 1, bias=False), nn.Conv2d(32, 32, 1, bias=False)]))
        self.u = xavier_(nn.ModuleList([nn.Conv2d(32, 1, 1, bias=False) for _ in range(2)]))
        self.nonimage = NonImageBranch()
        self.classifier = xavier_(nn.Linear(64 + 3, num_classes))

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None, return_attention: bool = False):
        block = self.features.get_submodule
        l2 = block("b2")(block("b1")(x))
        l3 = block("b3")(l2)
        g = torch.flatten(F.adaptive_avg_pool2d(l3, 1), 1)
        pooled, maps = [], []
        for s, l in enumerate((l2, l3)):
            lp = self.project[s](l)
            c = self.u[s](F.relu(lp + g[:, :, None, None]))
            a = torch.softmax(c.flatten(1), dim=1, dtype=softmax_dtype(c)).to(lp.dtype)
            pooled.append(torch.bmm(lp.flatten(2), a.unsqueeze(-1)).squeeze(-1))
            maps.append(a.view(l.shape[0], *l.shape[2:]))
        z = torch.cat(pooled + [self.nonimage(require_features(features, "tiny_attn"))], dim=1)
        logits = self.classifier(z)
        return (logits, maps) if return_attention else logits


@register_model(cam_layer="features.b3", input_size=64)
def tiny(num_classes: int = 15, pretrained: bool | str = False) -> nn.Module:
    """A 6.6k-parameter CNN for tests and the quickstart."""
    return TinyCNN(num_classes, pretrained)


@register_model(cam_layer="features.b3", input_size=64, attention=True, nonimage=True)
def tiny_attn(num_classes: int = 15, pretrained: bool | str = False) -> nn.Module:
    """tiny with attention maps and the non-image features, for tests and the quickstart."""
    return TinyAttention(num_classes, pretrained)


class TinyResidual(nn.Module):
    """A tiny residual CNN (the ResNet role in the miniature study)."""

    def __init__(self, num_classes: int = 15, pretrained: bool | str = False) -> None:
        super().__init__()
        if pretrained:
            from cxrbench.errors import WeightsUnavailable

            raise WeightsUnavailable("tiny models have no pretrained weights; run with --no-pretrained")
        self.stem = _block(3, 16)
        self.res = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
        )
        self.down = _block(16, 24)
        xavier_(self)
        self.classifier = xavier_(nn.Linear(24, num_classes))
        self.cxrbench_weights = {"pretrained": False}

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        h = self.stem(x)
        h = F.relu(h + self.res(h))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.down(h), 1), 1))


class TinyNonImage(TinyCNN):
    """tiny with the paper's non-image branch joined before the classifier."""

    def __init__(self, num_classes: int = 15, pretrained: bool | str = False) -> None:
        super().__init__(num_classes, pretrained)
        self.nonimage = NonImageBranch()
        self.classifier = xavier_(nn.Linear(32 + 3, num_classes))

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        g = torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)
        return self.classifier(torch.cat([g, self.nonimage(require_features(features, "tiny_nonimage"))], 1))


@register_model(cam_layer="down", input_size=64)
def tiny_res(num_classes: int = 15, pretrained: bool | str = False) -> nn.Module:
    """A tiny residual CNN: the ResNet role in the miniature of the paper's study."""
    return TinyResidual(num_classes, pretrained)


@register_model(cam_layer="features.b3", input_size=64, nonimage=True)
def tiny_nonimage(num_classes: int = 15, pretrained: bool | str = False) -> nn.Module:
    """tiny + age, sex and view: the non-image role in the miniature of the paper's study."""
    return TinyNonImage(num_classes, pretrained)
