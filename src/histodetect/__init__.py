"""histodetect: lesion detection in whole-slide images as tile classification."""

__version__ = "0.1.0"
