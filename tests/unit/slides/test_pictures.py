"""Pictures on a slide thumbnail: titles fitted to the picture's width."""

from __future__ import annotations

import numpy as np
from _drawn import drawn_texts, texts_outside

from histodetect.slides.pictures import (
    TITLE_PX,
    fit_text,
    text_width_px,
    thumbnail_figure,
    wrap_px,
)

LONG = "TCGA-AB-1234-01Z-00-DX1: attention in bag patient-TCGA-AB-1234 (label grade_3, train), "
LONG += "12345 tiles"


def test_a_long_title_on_a_narrow_thumbnail_wraps_inside_the_picture() -> None:
    fig, _ = thumbnail_figure(np.full((200, 300, 3), 180, np.uint8), LONG)
    (title, extent), *_ = drawn_texts(fig)
    assert title.replace("\n", " ") == LONG and title.count("\n") >= 1
    assert texts_outside(fig) == []
    assert extent.width <= fig.bbox.width - 2 * 6 + 0.5  # its margins kept
    # the strip grew for the second line, and the thumbnail is still drawn whole below it
    assert fig.bbox.height > round(400 * 200 / 300) + TITLE_PX
    assert fig.axes[0].get_window_extent().height >= round(400 * 200 / 300) - 1


def test_a_short_title_keeps_its_one_line_strip() -> None:
    fig, _ = thumbnail_figure(np.full((200, 400, 3), 180, np.uint8), "slide s")
    assert [t for t, _ in drawn_texts(fig)] == ["slide s"]
    assert round(fig.bbox.height) == 200 + TITLE_PX
    assert fig._suptitle.get_fontsize() == 10


def test_fit_text_shrinks_to_its_floor_then_wraps() -> None:
    text = "attention in bag B1 (label 1, train)"
    width = text_width_px(text, 9)
    same, size = fit_text(text, width, 10, 8)  # shrinks while one line can fit
    assert same == text and 9 <= size < 10
    assert text_width_px(text, size) <= width < text_width_px(text, size + 0.5)
    wrapped, size = fit_text(text, width / 2, 10, 8)
    assert size == 8 and wrapped.count("\n") >= 1
    assert all(text_width_px(line, 8) <= width / 2 for line in wrapped.split("\n"))


def test_wrap_px_breaks_a_word_only_where_it_alone_is_too_wide() -> None:
    slide = "TCGA-AB-1234-01Z-00-DX1.0123456789ABCDEF"
    lines = wrap_px(f"slide {slide} #1", 60, 7).split("\n")
    assert lines[0] == "slide" and "".join(lines[1:]) == f"{slide} #1"  # all, in order
    assert lines[1].endswith("-")  # cut after a part of the id, not inside it
    assert all(text_width_px(line, 7) <= 60 for line in lines)
    assert wrap_px("a b", 60, 7) == "a b"
