"""NIH ChestX-ray14 metadata, labels, dataset layout, the paper's subset, splits and the phantom set."""
