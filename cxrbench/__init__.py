"""cxrbench: fast, exact and comparable chest X-ray classification benchmarks on NIH ChestX-ray14."""

__version__ = "0.1.0"
