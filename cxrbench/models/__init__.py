"""Model registry, the reference paper's models, a tiny test model, and third-party plugins.

from cxrbench.models import create_model, list_models
model = create_model("densenet121_attA", num_classes=15, pretrained=False)
"""

from cxrbench.models.registry import (
    ModelSpec,
    count_parameters,
    create_model,
    get_spec,
    list_models,
    register_model,
)

__all__ = ["ModelSpec", "count_parameters", "create_model", "get_spec", "list_models", "register_model"]
