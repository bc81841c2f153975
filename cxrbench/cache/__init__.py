"""The preprocessing cache: decode every PNG once, area-resize it, and keep uint8 pixels in a zarr v3 store.

This package must not import torch: `cache build` starts in well under a second.
"""
