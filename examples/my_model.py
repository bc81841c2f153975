"""A complete cxrbench model plugin: `cxrbench run --plugin examples/my_model.py --model mynet ...`."""

import torch
from torch import nn

from cxrbench.models import register_model


@register_model(cam_layer="body.2", input_size=64)
def mynet(num_classes: int = 15, pretrained: bool = False) -> nn.Module:
    """Two conv layers and a linear classifier (about 5,000 parameters)."""

    class MyNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 5, stride=4, padding=2), nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            )
            self.head = nn.Linear(32, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x).mean(dim=(2, 3)))

    return MyNet()
