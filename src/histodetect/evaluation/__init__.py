"""Evaluation: score the boxes against the truth (DigiLut F2 at GIoU > 0.5, AP, FROC) and tiles.

Hands on the cohort's metrics (``detection.json``, tables, the DigiLut submission) and the
figures of the report.
"""
