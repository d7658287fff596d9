"""Fit: what every stage that trains a network shares, below the stages that use it.

The resumable epoch loop with MLflow and TensorBoard tracking (``loop``, ``tracking``), weight
averaging (``ema``), timm backbones, devices and self-describing model files (``model``), tile
tensors, stain tools, augmentation and loaders (``data``, ``stain``), and the scores of tile and bag predictions
(``metrics``).
"""
