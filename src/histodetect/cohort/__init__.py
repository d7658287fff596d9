"""Cohort: build bags and patch tables, split patients into train/test and folds, sample tiles.

Hands on ``split.tsv`` and ``folds.tsv`` (no patient in two sets, checked in code) and each
fold's training and validation tile tables; or the same from a folder of labelled patches.
"""
