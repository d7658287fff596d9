"""Points mode: object centres (e.g. mitoses) from heatmaps, counted as pathologists count them.

Points from a tile-grid heatmap (``detect``), counts per high-power field and per 10 HPF
(``counts``), point F1 against the truth at a physical distance (``metrics``), the threshold
and distance tuned out of fold (``tuning``), and the hard-negative training round
(``hard_negatives``).
"""
