"""Annotations: read lesion boxes and outlines (DigiLut CSV, GeoJSON, ASAP, ...), label tiles.

Hands on each slide's tiles with their ``iou``, ``coverage`` and ``label`` (1 lesion, 0 not,
-1 ignored), and the box geometry (IoU, GIoU) that detection and evaluation share.
"""
