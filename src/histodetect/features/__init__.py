"""Tile embeddings per slide: encoders, the cohort's own self-supervised encoder and h5 files.

Stage between ``training`` (whose tile reading and model loading it reuses) and
``detection``; its files are what slide-level models read instead of pixels.
"""
