"""Slides: open a slide, resolve um/px to a pyramid level, find tissue, lay tiles on it.

Hands on a tile table per slide (level-0 ``x, y, size``, grid ``row, col``, the level read and
its mpp), a tiling record and a QC picture; reads tile pixels for the stages above
(:class:`~histodetect.slides.reader.SlideReader`). Also makes the synthetic demo cohort.
"""
