"""Annotation XML read as a stream: memory holds one drawing at a time, not the whole tree.

A 200 MB ImageScope file of every nucleus of a slide is a few GB as an element tree; read
with :func:`stream_xml`, each region is removed from the tree once the reader has kept its
outline, so peak memory is one region plus the outlines kept (``bench/annotation_xml.py``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from histodetect.errors import AnnotationError

START, END = "start", "end"


def stream_xml(
    path: Path, drop: frozenset[str]
) -> Iterator[tuple[str, list[ET.Element], ET.Element]]:
    """``(event, ancestors, element)`` for each ``start`` and ``end`` of the file's elements.

    ``ancestors`` runs from the root to the element's parent. At ``end`` the element is
    complete (children and attributes); once the caller has handled it, an element whose tag
    is in ``drop`` is cleared and removed from its parent. Unreadable or malformed XML is an
    :class:`AnnotationError` naming the file, wherever in the file it is met.
    """
    ancestors: list[ET.Element] = []
    try:
        with path.open("rb") as f:
            for event, element in ET.iterparse(f, events=(START, END)):
                if event == START:
                    yield event, ancestors, element
                    ancestors.append(element)
                    continue
                ancestors.pop()
                yield event, ancestors, element
                if element.tag in drop and ancestors:
                    element.clear()
                    ancestors[-1].remove(element)
    except ET.ParseError as err:
        raise AnnotationError(path, f"invalid XML ({err})") from None
    except OSError as err:
        raise AnnotationError(path, f"cannot read the file ({err})") from None
