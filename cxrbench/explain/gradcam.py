"""Grad-CAM (Selvaraju et al.), as the reference paper writes it (Eqs. 6-7), batched and on the device.

For class c: A = the CAM layer's output, G = d logit_c / d A (the logit before the sigmoid), channel weights
= spatial mean of G, map = ReLU(sum_j w_j A_j). The forward hook lives only inside the `GradCAM` context
and is removed on exit; nothing is retained between calls.

A map is *degenerate* when it is non-finite or when its peak is negligible against the layer's activations
(below `DEGENERATE_RATIO` x mean |A|): such a map is flagged and never min-max stretched into a picture.
This happens for real: norm5 of densenet121_attA reaches the logits only through g, which cancels in the
attention softmax, so its Grad-CAM peaks at float noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.hooks import RemovableHandle

DEGENERATE_RATIO = 1e-6


@dataclass
class CamResult:
    """Maps for B images x K classes."""

    maps: torch.Tensor  # (B, K, h, w), ReLU'd, unnormalised, float32
    logits: torch.Tensor  # (B, C)
    peak_ratio: torch.Tensor  # (B, K): map peak / mean |A| of that image
    degenerate: torch.Tensor  # (B, K) bool

    def normalised(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Maps scaled to peak 1 (degenerate maps set to 0, never stretched), optionally upsampled."""
        m = self.maps
        peak = m.flatten(2).amax(-1).clamp_min(1e-30)[..., None, None]
        out = torch.where(self.degenerate[..., None, None], torch.zeros_like(m), m / peak)
        if size is not None:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
        return out


class GradCAM:
    """`with GradCAM(model, "features.norm5") as cam: res = cam(x, classes)`; hooks are released on exit."""

    def __init__(self, model: torch.nn.Module, layer: str, nonimage: bool = False) -> None:
        self.model = model
        self.layer_name = layer
        self.layer = model.get_submodule(layer)
        self.nonimage = nonimage
        self._handle: RemovableHandle | None = None
        self._act: torch.Tensor | None = None

    def __enter__(self) -> GradCAM:
        def hook(module, inp, out):
            self._act = out

        self._handle = self.layer.register_forward_hook(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._act = None

    def __call__(self, x: torch.Tensor, classes: torch.Tensor, features: torch.Tensor | None = None) -> CamResult:
        """Maps for `classes` (B, K) class indices per image."""
        if self._handle is None:
            raise RuntimeError("use GradCAM inside a `with` block")
        was = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                x = x.detach().requires_grad_(False)
                out = self.model(x, features) if self.nonimage else self.model(x)
                logits = out[0] if isinstance(out, (tuple, list)) else out
                act = self._act
                if act is None:
                    raise RuntimeError(f"layer {self.layer_name} did not run in the forward pass")
                maps = []
                k = classes.shape[1]
                for j in range(k):
                    sel = logits.gather(1, classes[:, j : j + 1].to(logits.device)).sum()
                    (grad,) = torch.autograd.grad(sel, act, retain_graph=j < k - 1)
                    w = grad.float().mean(dim=(2, 3), keepdim=True)  # Eq. 6
                    maps.append(F.relu((w * act.detach().float()).sum(1)))  # Eq. 7
                maps_t = torch.stack(maps, 1)
                scale = act.detach().float().abs().mean(dim=(1, 2, 3)).clamp_min(1e-30)
        finally:
            self.model.train(was)
            self._act = None
        peak = maps_t.flatten(2).amax(-1)
        ratio = peak / scale[:, None]
        degenerate = ~torch.isfinite(ratio) | (ratio < DEGENERATE_RATIO)
        maps_t = torch.nan_to_num(maps_t, nan=0.0, posinf=0.0, neginf=0.0)
        return CamResult(maps_t.detach(), logits.detach(), ratio.detach(), degenerate.detach())


def attention_maps(model, x: torch.Tensor, features: torch.Tensor | None = None, nonimage: bool = False):
    """The attention maps a^1..a^S of an attention model, each (B, h_s, w_s) summing to 1."""
    with torch.no_grad():
        _, maps = model(x, features, return_attention=True) if nonimage else model(x, return_attention=True)
    return maps
