"""Training: one fold's tile classifier, its calibration and its decision threshold.

Hands on a self-describing ``model.pt`` per fold (tile size, classes, normalisation) with its
validation scores, tracked in MLflow and TensorBoard (the loop itself lives in ``fit``).
"""
