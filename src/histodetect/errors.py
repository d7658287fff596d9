"""Errors about bad input, reported as one line that names the file and the cause."""

from __future__ import annotations

from collections.abc import Iterable


class InputError(Exception):
    """Bad user input: a slide, a sample sheet, an annotation file or a config value."""

    def __init__(self, source: object, cause: str) -> None:
        self.source = str(source)
        self.cause = " ".join(str(cause).split())  # always one line, whatever a library said
        super().__init__(f"{self.source}: {self.cause}")


class SlideError(InputError):
    """A slide that cannot be read or has no usable resolution."""


class AnnotationError(InputError):
    """An annotation file that cannot be parsed or does not fit its slide."""


class SplitError(InputError):
    """A patient split or fold assignment that would leak or cannot be made."""


SHOWN = 10
"""How many ids or rows a message names before it counts the rest."""


def name_some(items: Iterable[object], limit: int = SHOWN, sep: str = ", ") -> str:
    """``items`` joined by ``sep``; past ``limit`` the first ``limit`` and ``... and N more``.

    Every message that lists ids, rows or files goes through here, so one line stays readable
    at any cohort size.
    """
    items = list(items)
    shown = sep.join(map(str, items[:limit]))
    return shown if len(items) <= limit else f"{shown}{sep}... and {len(items) - limit} more"
