"""DigiLut CSV boxes: the happy path and one error per malformed case."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from histodetect.annotations import check_boxes_inside, read_digilut_csv, slide_name_map
from histodetect.errors import AnnotationError

SAMPLES = pd.DataFrame(
    {
        "slide_id": ["s1", "s2"],
        "path": ["/data/slides/alpha.tif", "/data/slides/beta.svs"],
        "patient_id": ["p1", "p2"],
    }
)


@pytest.fixture
def names() -> dict[str, str]:
    return slide_name_map(SAMPLES)


def write(tmp_path: Path, text: str, name: str = "boxes.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_slide_name_map() -> None:
    assert slide_name_map(SAMPLES) == {
        "alpha.tif": "s1",
        "beta.svs": "s2",
        "s1": "s1",
        "s2": "s2",
    }


def test_read_file_names_and_slide_ids(tmp_path: Path, names: dict[str, str]) -> None:
    p = write(
        tmp_path,
        "filename,x1,x2,y1,y2\nalpha.tif,10,50,20,80\ns2,0,5.5,1,2\nalpha.tif,100,200,300,400\n",
    )
    df = read_digilut_csv(p, names)
    assert list(df.columns) == ["slide_id", "x1", "y1", "x2", "y2"]
    assert df.slide_id.tolist() == ["s1", "s2", "s1"]
    assert df.iloc[0].tolist() == ["s1", 10.0, 20.0, 50.0, 80.0]
    assert df.iloc[1].tolist() == ["s2", 0.0, 1.0, 5.5, 2.0]
    assert df.iloc[2][["x1", "y1", "x2", "y2"]].tolist() == [100.0, 300.0, 200.0, 400.0]
    assert all(df[c].dtype == float for c in ("x1", "y1", "x2", "y2"))


def test_read_with_max_columns(tmp_path: Path, names: dict[str, str]) -> None:
    p = write(
        tmp_path,
        "filename,x1,x2,y1,y2,max_x,max_y\nbeta.svs,1,100,2,200,100,200\ns1,0,10,0,10,1000,1000\n",
    )
    df = read_digilut_csv(p, names)
    assert df.slide_id.tolist() == ["s2", "s1"]
    assert df.x2.tolist() == [100.0, 10.0]
    assert "max_x" not in df.columns


def test_read_header_only(tmp_path: Path, names: dict[str, str]) -> None:
    df = read_digilut_csv(write(tmp_path, "filename,x1,x2,y1,y2\n"), names)
    assert len(df) == 0
    assert list(df.columns) == ["slide_id", "x1", "y1", "x2", "y2"]


def test_numeric_like_filename_kept_as_string(tmp_path: Path) -> None:
    p = write(tmp_path, "filename,x1,x2,y1,y2\n007,1,2,3,4\n")
    df = read_digilut_csv(p, {"007": "slide7"})
    assert df.slide_id.tolist() == ["slide7"]


def _error(path: Path, names: dict[str, str]) -> str:
    with pytest.raises(AnnotationError) as info:
        read_digilut_csv(path, names)
    msg = str(info.value)
    assert str(path) in msg
    assert "\n" not in msg
    return msg


def test_unknown_slide(tmp_path: Path, names: dict[str, str]) -> None:
    p = write(tmp_path, "filename,x1,x2,y1,y2\nalpha.tif,1,2,3,4\ngamma.tif,1,2,3,4\n")
    msg = _error(p, names)
    assert "row 3" in msg
    assert "gamma.tif" in msg


def test_x1_greater_than_x2(tmp_path: Path, names: dict[str, str]) -> None:
    p = write(tmp_path, "filename,x1,x2,y1,y2\ns1,1,2,3,4\ns1,1,2,3,4\ns1,50,10,3,4\n")
    msg = _error(p, names)
    assert "row 4" in msg
    assert "empty box" in msg


def test_y1_equal_y2(tmp_path: Path, names: dict[str, str]) -> None:
    p = write(tmp_path, "filename,x1,x2,y1,y2\ns1,1,2,3,3\n")
    assert "row 2" in _error(p, names)


def test_nan_coordinate(tmp_path: Path, names: dict[str, str]) -> None:
    p = write(tmp_path, "filename,x1,x2,y1,y2\ns1,1,2,3,4\ns2,1,,3,4\n")
    msg = _error(p, names)
    assert "row 3" in msg
    assert "x2" in msg


def test_non_numeric_coordinate(tmp_path: Path, names: dict[str, str]) -> None:
    p = write(tmp_path, "filename,x1,x2,y1,y2\ns1,1,2,abc,4\n")
    msg = _error(p, names)
    assert "row 2" in msg
    assert "y1" in msg


def test_negative_coordinate(tmp_path: Path, names: dict[str, str]) -> None:
    p = write(tmp_path, "filename,x1,x2,y1,y2\ns1,-5,2,3,4\n")
    msg = _error(p, names)
    assert "row 2" in msg
    assert "negative" in msg


def test_empty_file(tmp_path: Path, names: dict[str, str]) -> None:
    assert "empty" in _error(write(tmp_path, ""), names)


def test_missing_column(tmp_path: Path, names: dict[str, str]) -> None:
    p = write(tmp_path, "filename,x1,x2,y1\ns1,1,2,3\n")
    msg = _error(p, names)
    assert "missing column(s) y2" in msg


def test_box_beyond_max_x(tmp_path: Path, names: dict[str, str]) -> None:
    p = write(
        tmp_path,
        "filename,x1,x2,y1,y2,max_x,max_y\ns1,1,2,3,4,10,10\ns1,1,20,3,4,10,10\n",
    )
    msg = _error(p, names)
    assert "row 3" in msg
    assert "outside" in msg


def test_box_beyond_max_y(tmp_path: Path, names: dict[str, str]) -> None:
    p = write(tmp_path, "filename,x1,x2,y1,y2,max_x,max_y\ns1,1,2,3,40,10,10\n")
    assert "row 2" in _error(p, names)


def test_only_max_x_column(tmp_path: Path, names: dict[str, str]) -> None:
    """Each bound column is optional on its own."""
    ok = write(tmp_path, "filename,x1,x2,y1,y2,max_x\ns1,1,2,3,400,10\n", "ok.csv")
    assert read_digilut_csv(ok, names).y2.tolist() == [400.0]
    bad = write(tmp_path, "filename,x1,x2,y1,y2,max_x\ns1,1,20,3,4,10\n", "bad.csv")
    assert "row 2" in _error(bad, names)


def test_only_max_y_column(tmp_path: Path, names: dict[str, str]) -> None:
    bad = write(tmp_path, "filename,x1,x2,y1,y2,max_y\ns1,1,2,3,40,10\n")
    assert "row 2" in _error(bad, names)


# --- check_boxes_inside ---------------------------------------------------------------------


def boxes(*rows: tuple[float, float, float, float]) -> pd.DataFrame:
    return pd.DataFrame([("s1", *r) for r in rows], columns=["slide_id", "x1", "y1", "x2", "y2"])


def test_check_boxes_inside_accepts_boxes_touching_edges() -> None:
    check_boxes_inside(boxes((0, 0, 100, 50), (10, 10, 20, 20)), 100, 50, "a.csv")
    check_boxes_inside(boxes(), 100, 50, "a.csv")


@pytest.mark.parametrize(
    "box", [(0, 0, 101, 50), (0, 0, 100, 51), (-1, 0, 10, 10), (0, -0.5, 10, 10)]
)
def test_check_boxes_inside_rejects(box: tuple[float, float, float, float]) -> None:
    with pytest.raises(AnnotationError) as info:
        check_boxes_inside(boxes((1, 1, 2, 2), box), 100, 50, "ann/a.csv")
    msg = str(info.value)
    assert msg.startswith("ann/a.csv: ")
    assert "slide s1" in msg
    assert "100 x 50" in msg
