"""Training: tile datasets and loaders, the timm classifier, and one fold's resumable training.

Hands on a self-describing ``model.pt`` per fold (tile size, classes, normalisation) with its
validation scores, tracked in MLflow and TensorBoard.
"""
