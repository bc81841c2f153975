"""DenseNet-121 with the attention of Jetley et al. (2018), as the reference paper adapts it (Sec. 2.2).

Local features l^s are the outputs of transition1/2/3 (128/256/512 channels); g is DenseNet's pooled
1024-vector. attA: c_i = <u^s, W l_i + g> with a 1x1 projection W to 1024 channels; attB:
c_i = <u^s, [l_i, g]> on the raw features. a^s = softmax_i(c_i); g_a^s = sum_i a_i (W) l_i; the three g_a
are concatenated into the classifier.

A consequence of the maths, kept on purpose because it is the paper's model: the g-term of both
compatibility functions adds the same constant <u, g> to every location, and a softmax over locations
cancels it. So g (hence denseblock4 and norm5) has no effect on the logits: the g-part of u and everything
that only feeds g get zero gradient, and Grad-CAM on norm5 is degenerate (tests/test_models.py shows
both). `densenet121_attA_relu` registers a variant, c_i = <u, ReLU(W l_i + g)>, in which g shapes the
attention.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from cxrbench.models.densenet import densenet121_features, global_feature
from cxrbench.models.layers import NonImageBranch, require_features, softmax_dtype, xavier_
from cxrbench.models.registry import register_model

LOCAL_LAYERS = ("transition1", "transition2", "transition3")
LOCAL_CHANNELS = (128, 256, 512)
G_DIM = 1024


class DenseNetAttention(nn.Module):
    """DenseNet-121 + attention; `variant` is "A", "B" or "A_relu"; optional non-image branch."""

    def __init__(
        self, num_classes: int = 15, pretrained: bool | str = False, variant: str = "A", nonimage: bool = False
    ) -> None:
        super().__init__()
        if variant not in ("A", "B", "A_relu"):
            raise ValueError(f"unknown attention variant {variant!r}")
        self.variant = variant
        self.features, self.cxrbench_weights = densenet121_features(pretrained)
        if variant == "B":
            self.project = None
            self.u = nn.ModuleList(nn.Conv2d(c + G_DIM, 1, 1, bias=False) for c in LOCAL_CHANNELS)
            dim = sum(LOCAL_CHANNELS)
        else:
            self.project = xavier_(nn.ModuleList(nn.Conv2d(c, G_DIM, 1, bias=False) for c in LOCAL_CHANNELS))
            self.u = nn.ModuleList(nn.Conv2d(G_DIM, 1, 1, bias=False) for _ in LOCAL_CHANNELS)
            dim = G_DIM * len(LOCAL_CHANNELS)
        xavier_(self.u)
        self.nonimage = branch = NonImageBranch() if nonimage else None
        self.classifier = xavier_(nn.Linear(dim + (branch.out_features if branch is not None else 0), num_classes))

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None, return_attention: bool = False):
        local: list[torch.Tensor] = []
        h = x
        for name, layer in self.features.named_children():
            h = layer(h)
            if name in LOCAL_LAYERS:
                local.append(h)
        g = global_feature(h)
        pooled, maps = [], []
        for s, l in enumerate(local):
            c, feat = self._compatibility(s, l, g)
            a = torch.softmax(c.flatten(1), dim=1, dtype=softmax_dtype(c)).to(feat.dtype)  # over locations
            pooled.append(torch.bmm(feat.flatten(2), a.unsqueeze(-1)).squeeze(-1))  # g_a = sum_i a_i l_i
            maps.append(a.view(l.shape[0], *l.shape[2:]))
        z = torch.cat(pooled, dim=1)
        if self.nonimage is not None:
            z = torch.cat([z, self.nonimage(require_features(features, "this model"))], dim=1)
        logits = self.classifier(z)
        return (logits, maps) if return_attention else logits

    def _compatibility(self, s: int, l: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(c of shape (B, 1, H, W), the features that a pools) for scale s."""
        u = cast(nn.Conv2d, self.u[s]).weight  # (1, D, 1, 1); self.u holds Conv2d layers only
        if self.variant == "B":
            ch = l.shape[1]
            # <u, [l_i, g]> = <u_l, l_i> + <u_g, g>: the same numbers as concatenating, without a (B, ch+1024,
            # H, W) tensor
            c = F.conv2d(l, u[:, :ch]) + (g @ u[0, ch:, 0, 0]).view(-1, 1, 1, 1)
            return c, l
        lp = self.project[s](l)  # type: ignore[index]
        if self.variant == "A_relu":
            return F.conv2d(F.relu(lp + g[:, :, None, None]), u), lp
        # <u, W l_i + g> = <u, W l_i> + <u, g>
        return F.conv2d(lp, u) + (g @ u[0, :, 0, 0]).view(-1, 1, 1, 1), lp


@register_model(cam_layer="features.transition3", attention=True)
def densenet121_attA(num_classes: int = 15, pretrained: bool | str = False) -> nn.Module:
    """DenseNet-121-attA: c_i = <u, W l_i + g>; 7,920,527 parameters at 15 classes."""
    return DenseNetAttention(num_classes, pretrained, "A")


@register_model(cam_layer="features.transition3", attention=True)
def densenet121_attB(num_classes: int = 15, pretrained: bool | str = False) -> nn.Module:
    """DenseNet-121-attB: c_i = <u, [l_i, g]>; 6,971,279 parameters at 15 classes."""
    return DenseNetAttention(num_classes, pretrained, "B")


@register_model(cam_layer="features.transition3", attention=True)
def densenet121_attA_relu(num_classes: int = 15, pretrained: bool | str = False) -> nn.Module:
    """attA with c_i = <u, ReLU(W l_i + g)>, so that g shapes the attention (not in the paper)."""
    return DenseNetAttention(num_classes, pretrained, "A_relu")
