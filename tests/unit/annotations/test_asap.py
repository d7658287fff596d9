"""ASAP XML with nested groups: an annotation's class is the first known group up its chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from histodetect.annotations.formats import EXCLUDE, ImportSettings, read_annotation_file
from histodetect.errors import AnnotationError


def asap(groups: dict[str, str], annotations: list[tuple[str, str]]) -> str:
    """ASAP XML of unit squares (``(name, group)``, the i-th at x = 10 i) and ``groups``
    (name to ``PartOfGroup``), the groups after the annotations as ASAP writes them."""
    anns = "".join(
        f'<Annotation Name="{name}" Type="Polygon" PartOfGroup="{group}"><Coordinates>'
        + "".join(
            f'<Coordinate Order="{j}" X="{10 * i + x}" Y="{y}"/>'
            for j, (x, y) in enumerate([(0, 0), (1, 0), (1, 1), (0, 1)])
        )
        + "</Coordinates></Annotation>"
        for i, (name, group) in enumerate(annotations)
    )
    grps = "".join(f'<Group Name="{g}" PartOfGroup="{p}"/>' for g, p in groups.items())
    return (
        f"<ASAP_Annotations><Annotations>{anns}</Annotations>"
        f"<AnnotationGroups>{grps}</AnnotationGroups></ASAP_Annotations>"
    )


NESTED = {
    "tumor_core": "tumor",
    "tumor": "None",
    "fat": "_2",
    "_2": "None",
    "stroma_dense": "stroma",
    "stroma": "None",
    "deep": "tumor_core",
}


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ("tumor_core", "lesion"),  # tumor_core -> tumor (known): a lesion
        ("deep", "lesion"),  # deep -> tumor_core -> tumor
        ("fat", EXCLUDE),  # fat -> _2: cut out
        ("stroma_dense", "stroma_dense"),  # no known group up the chain: its own
        ("stroma", "stroma"),
        ("undeclared", "undeclared"),  # not in <AnnotationGroups>: itself
        ("None", "lesion"),
        ("", "lesion"),
    ],
)
def test_nested_groups_resolve_to_the_nearest_known_group(
    tmp_path: Path, group: str, expected: str
) -> None:
    path = tmp_path / "a.xml"
    path.write_text(asap(NESTED, [("A", group)]), encoding="utf-8")
    assert read_annotation_file(path, ImportSettings()).class_name.tolist() == [expected]


@pytest.mark.parametrize(
    ("groups", "match"),
    [
        (
            {"a": "b", "b": "c", "c": "a"},
            r"Group .a.: PartOfGroup chain is a cycle \(a -> b -> c -> a\)",
        ),
        ({"x": "x"}, r"Group 'x': PartOfGroup chain is a cycle \(x -> x\)"),
        ({"tumor": "None", "loop": "tumor_core", "tumor_core": "loop"}, "Group 'loop'"),
    ],
)
def test_a_cycle_of_groups_is_one_line(tmp_path: Path, groups: dict[str, str], match: str) -> None:
    path = tmp_path / "cycle.xml"
    path.write_text(asap(groups, [("A", "tumor")]), encoding="utf-8")
    with pytest.raises(AnnotationError, match=match) as err:
        read_annotation_file(path, ImportSettings())
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_dot_with_a_word_for_a_coordinate_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "dot.xml"
    path.write_text(
        '<ASAP_Annotations><Annotations><Annotation Name="m" Type="Dot" PartOfGroup="_0">'
        '<Coordinates><Coordinate Order="0" X="ab" Y="1"/></Coordinates></Annotation>'
        "</Annotations></ASAP_Annotations>"
    )
    with pytest.raises(AnnotationError, match=r"Annotation 1 \('m'\): a <Coordinate> X or Y"):
        read_annotation_file(path, ImportSettings(), mpp=0.5)
