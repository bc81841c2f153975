"""Explanations: Grad-CAM on each model's declared layer, attention maps, galleries, localisation scores."""
