"""Small building blocks shared by the paper's models: Xavier-normal init and the non-image branch."""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

_M = TypeVar("_M", bound=nn.Module)


def xavier_(module: _M) -> _M:
    """Xavier-normal weights and zero biases for every Linear/Conv2d in `module` (the paper's init)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class NonImageBranch(nn.Module):
    """Age, sex and view (5 inputs) through Linear(5, 3) and a ReLU, as in the paper's Fig. 4."""

    def __init__(self, n_in: int = 5, n_out: int = 3) -> None:
        super().__init__()
        self.fc = xavier_(nn.Linear(n_in, n_out))
        self.out_features = n_out

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(features))


def require_features(features: torch.Tensor | None, name: str) -> torch.Tensor:
    if features is None:
        raise ValueError(f"{name} takes the non-image features: call model(x, features)")
    return features


def softmax_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype an attention softmax runs in: at least float32 (bf16/fp16 inputs are upcast), float64 kept."""
    return torch.promote_types(x.dtype, torch.float32)
