"""Detection: the fold models as one ensemble over a slide's tiles, a heatmap, boxes from it.

Hands on per slide a heatmap on the tile grid, tile probabilities, scored boxes in level-0
pixels, QuPath GeoJSON and an overlay picture.
"""
