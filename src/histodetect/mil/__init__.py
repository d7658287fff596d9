"""Models of slide or patient labels (multiple-instance learning) on the tile embeddings.

Stage between ``features`` (whose h5 files its bags stream from) and ``detection``; it reuses
the cohort's bag split and the training stage's fold loop and out-of-fold decision.
"""
