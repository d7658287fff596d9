"""DigiLut CSV boxes (one error per malformed case) and cohort annotations from all sources."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import shapely

from histodetect.annotations.formats import ImportSettings
from histodetect.annotations.lesions import (
    ANNOTATION_COLUMNS,
    boxes_as_annotations,
    clip_to_slide,
    lesion_slides,
    read_box_index,
    read_cohort_annotations,
    read_digilut_csv,
    slide_name_map,
    truth_boxes,
    write_box_index,
)
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


def test_box_over_the_left_edge_is_read_and_clipped_when_labelled(
    tmp_path: Path, names: dict[str, str]
) -> None:
    p = write(tmp_path, "filename,x1,x2,y1,y2\ns1,-5,20,3,40\n")
    boxes = read_digilut_csv(p, names)  # no slide size in the file: kept for label_tiles
    assert boxes.x1.tolist() == [-5.0]
    clipped = clip_to_slide(boxes_as_annotations(boxes, p), 1000, 1000)
    assert clipped.geometry[0].bounds == (0.0, 3.0, 20.0, 40.0)


def test_box_wholly_left_of_the_slide(tmp_path: Path, names: dict[str, str]) -> None:
    p = write(tmp_path, "filename,x1,x2,y1,y2\ns1,1,2,3,4\ns1,-5,-2,3,4\n")
    msg = _error(p, names)
    assert "row 3: box lies outside the slide (x2=-2, y2=4: left of or above it)" in msg


def test_boxes_crossing_max_x_max_y_are_clipped_in_one_warning_line(
    tmp_path: Path, names: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    p = write(
        tmp_path,
        "filename,x1,x2,y1,y2,max_x,max_y\n"
        "s1,-5,100,3,40,1000,800\n"  # over the left edge
        "s1,10,20,30,40,1000,800\n"
        "s2,950,1010,700,790,1000,900\n"  # over the right edge of a wider slide
        "s2,10,20,-1,40,1000,900\n",  # over the top edge
    )
    with caplog.at_level("WARNING"):
        boxes = read_digilut_csv(p, names)
    assert boxes[["x1", "y1", "x2", "y2"]].to_numpy().tolist() == [
        [0, 3, 100, 40], [10, 30, 20, 40], [950, 700, 1000, 790], [10, 0, 20, 40]
    ]  # fmt: skip
    assert [r.getMessage() for r in caplog.records] == [
        f"{p}: 3 outlines crossed the slide edge and were clipped: row 2, row 4, row 5"
    ]
    # the same boxes through the box index (labelling) and the cohort reader (evaluation)
    index = tmp_path / "boxes.parquet"
    write_box_index(SAMPLES, p, index)
    indexed, _ = read_box_index(index, ["s1", "s2"])
    assert indexed[["x1", "y1", "x2", "y2"]].to_numpy().tolist() == boxes[["x1", "y1", "x2", "y2"]].to_numpy().tolist()  # fmt: skip
    truth = truth_boxes(SAMPLES, p)
    assert truth.x1.min() == 0 and truth.y1.min() == 0 and truth.x2.max() == 1000


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
    assert "row 3: slide s1: outline (1, 3, 20, 4) reaches 10 px past the slide's edge" in msg


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


# --- clip_to_slide -------------------------------------------------------------------------


def boxes(*rows: tuple[float, float, float, float]) -> pd.DataFrame:
    """DigiLut-style boxes as the annotation table holds them (rectangles)."""
    return pd.DataFrame(
        [
            ("s1", "lesion", shapely.box(*r), "ann/a.csv", f"row {i + 2}")
            for i, r in enumerate(rows)
        ],
        columns=ANNOTATION_COLUMNS,
    )


def test_clip_to_slide_keeps_boxes_inside_and_touching_edges() -> None:
    ann = boxes((0, 0, 100, 50), (10, 10, 20, 20))
    assert clip_to_slide(ann, 100, 50) is ann
    assert clip_to_slide(boxes(), 100, 50).empty


@pytest.mark.parametrize(
    "box", [(0, 0, 101, 50), (0, 0, 100, 52), (-1, 0, 10, 10), (0, -0.5, 10, 10), (-2, -2, 102, 52)]
)
def test_clip_to_slide_clips_over_the_edge_and_says_so(
    box: tuple[float, float, float, float], caplog: pytest.LogCaptureFixture
) -> None:
    ann = boxes((1, 1, 2, 2), box)
    with caplog.at_level("WARNING"):
        out = clip_to_slide(ann, 100, 50)
    x1, y1, x2, y2 = out.geometry.iloc[1].bounds
    assert (x1, y1, x2, y2) == (max(box[0], 0), max(box[1], 0), min(box[2], 100), min(box[3], 50))
    assert out.geometry.iloc[0].equals(ann.geometry.iloc[0]) and ann.geometry.iloc[1].bounds == box
    (line,) = [r.getMessage() for r in caplog.records]
    assert (
        line == "ann/a.csv: 1 outlines crossed the slide edge (100 x 50 px) and were clipped: row 3"
    )


def test_clip_to_slide_keeps_the_area_inside_of_an_outline_leaving_and_coming_back() -> None:
    # a U over the bottom edge (2 px past it): its two arms stay, as two areas
    u = shapely.Polygon([(10, 10), (10, 52), (20, 52), (20, 20), (30, 20), (30, 52), (40, 52), (40, 10)])  # fmt: skip
    ann = boxes((0, 0, 1, 1)).assign(geometry=[u])
    clipped = clip_to_slide(ann, 100, 50).geometry.iloc[0]
    assert clipped.geom_type in ("Polygon", "MultiPolygon")
    assert clipped.area == pytest.approx(u.intersection(shapely.box(0, 0, 100, 50)).area)
    assert clipped.bounds == (10, 10, 40, 50)


@pytest.mark.parametrize(
    ("box", "cause"),
    [
        ((120, 0, 130, 10), "lies outside the slide"),  # nothing inside
        ((-10, -10, -1, -1), "lies outside the slide"),
        ((0, 0, 200, 40), "reaches 100 px past the slide's edge, more than"),
    ],
)
def test_clip_to_slide_refuses_what_cannot_be_on_this_slide(
    box: tuple[float, float, float, float], cause: str
) -> None:
    with pytest.raises(AnnotationError) as info:
        clip_to_slide(boxes((1, 1, 2, 2), box, box), 100, 50)
    msg = str(info.value)
    assert msg.startswith("ann/a.csv: row 3: slide s1: outline")
    assert cause in msg and "(100 x 50 px) (and 1 more)" in msg and "\n" not in msg


def test_clip_to_slide_tolerance_is_a_share_of_the_shorter_side() -> None:
    ann = boxes((0, 0, 110, 10))  # 10 px past a 100 x 50 slide: 20% of 50
    with pytest.raises(AnnotationError, match="edge_tolerance"):
        clip_to_slide(ann, 100, 50)
    assert clip_to_slide(ann, 100, 50, tolerance=0.2).geometry.iloc[0].bounds == (0, 0, 100, 10)


# --- cohort annotations: DigiLut rows plus per-slide files ----------------------------------


def cohort(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    """Sheet of 3 slides: s1 boxes in the CSV, s2 an NCRF file (with an excluded hole),
    s3 a point CSV; the CSV also has a box for s2."""
    ncrf = tmp_path / "s2.json"
    ncrf.write_text(
        '{"positive": [{"name": "a", "vertices": [[0, 0], [3200, 0], [3200, 6400]]}],'
        ' "negative": [{"name": "b", "vertices": [[1600, 100], [3000, 100], [3000, 1500]]}]}'
    )
    points = tmp_path / "s3.csv"
    points.write_text("x,y,class\n100,200,mitosis\n")
    sheet = pd.DataFrame(
        {
            "slide_id": ["s1", "s2", "s3"],
            "patient_id": ["p1", "p2", "p3"],
            "path": ["/d/alpha.tif", "/d/beta.tif", "/d/gamma.tif"],
            "annotation": [None, str(ncrf), str(points)],
            "annotation_scale": [None, 1 / 32, None],
            "mpp": [None, None, 0.5],
        }
    )
    csv = write(tmp_path, "filename,x1,x2,y1,y2\nalpha.tif,10,50,20,80\nbeta.tif,1,2,3,4\n")
    return sheet, csv


def test_read_cohort_annotations(tmp_path: Path) -> None:
    sheet, csv = cohort(tmp_path)
    ann = read_cohort_annotations(sheet, csv, ImportSettings(point_radius_um=4.0))
    assert list(ann.columns) == ANNOTATION_COLUMNS
    assert ann.slide_id.tolist() == ["s1", "s2", "s2", "s2", "s3"]
    assert ann.class_name.tolist() == ["lesion", "lesion", "lesion", "exclude", "mitosis"]
    assert ann.geometry[2].bounds == pytest.approx((0, 0, 100, 200))  # scaled by 1/32
    assert ann.geometry[4].area == pytest.approx(3.14159 * 8**2, rel=0.01)  # 4 um at 0.5 um/px
    assert ann.source[0] == str(csv) and ann.item[0] == "row 2"
    one = read_cohort_annotations(sheet, csv, slides=["s2"], mpps={"s2": 1.0})
    assert set(one.slide_id) == {"s2"} and len(one) == 3
    assert lesion_slides(sheet, csv) == {"s1", "s2", "s3"}
    assert lesion_slides(sheet.iloc[:1], None) == set()


def test_truth_boxes_bound_each_lesion_and_skip_exclusions(tmp_path: Path) -> None:
    sheet, csv = cohort(tmp_path)
    boxes = truth_boxes(sheet, csv, mpps={"s3": 1.0}, settings=ImportSettings(point_radius_um=5))
    assert list(boxes.columns) == ["slide_id", "x1", "y1", "x2", "y2"]
    assert boxes.slide_id.tolist() == ["s1", "s2", "s2", "s3"]
    assert boxes.iloc[0, 1:].tolist() == [10.0, 20.0, 50.0, 80.0]  # DigiLut box unchanged
    assert boxes.iloc[2, 1:].tolist() == pytest.approx([0, 0, 100, 200])
    assert boxes.iloc[3, 1:].tolist() == pytest.approx([95, 195, 105, 205])
    plain = truth_boxes(sheet.drop(columns="annotation"), csv)
    pd.testing.assert_frame_equal(
        plain, read_digilut_csv(csv, slide_name_map(sheet)).reset_index(drop=True)
    )


def test_points_without_mpp_name_the_file(tmp_path: Path) -> None:
    sheet, csv = cohort(tmp_path)
    sheet["mpp"] = None
    with pytest.raises(AnnotationError, match=r"s3\.csv: row 2: point annotations need"):
        truth_boxes(sheet, csv)


def test_clip_to_slide_names_file_and_item(tmp_path: Path) -> None:
    sheet, csv = cohort(tmp_path)
    sheet["annotation_scale"] = None  # forgot the 1/32: outlines land far outside
    ann = read_cohort_annotations(sheet, csv, slides=["s2"])
    fits = ann[ann.item == "row 3"]  # the CSV box
    assert clip_to_slide(fits, 200, 400) is fits
    with pytest.raises(AnnotationError, match=r"s2.json: positive\[0\]: slide s2: outline") as e:
        clip_to_slide(ann, 200, 400)
    assert "\n" not in str(e.value) and "check the coordinate scale" in str(e.value)


def test_box_index_gives_each_slide_the_rows_the_csv_gives(tmp_path: Path) -> None:
    csv = write(
        tmp_path,
        "filename,x1,x2,y1,y2\nbeta.svs,1,2,3,4\nalpha.tif,10,50,20,80\ns2,5,6,7,8\n",
    )
    index = tmp_path / "boxes.parquet"
    assert write_box_index(SAMPLES, csv, index) == 3
    for slides in (["s1"], ["s2"], ["s1", "s2"], ["nobody"]):
        direct = read_cohort_annotations(SAMPLES, csv, slides=slides)
        indexed = read_cohort_annotations(SAMPLES, None, slides=slides, box_index=index)
        pd.testing.assert_frame_equal(indexed, direct)
    boxes, source = read_box_index(index, ["s2"])
    assert boxes.index.tolist() == [0, 2] and source == str(csv)  # CSV rows 2 and 4


def test_box_index_of_a_csv_without_boxes(tmp_path: Path) -> None:
    csv = write(tmp_path, "filename,x1,x2,y1,y2\n")
    index = tmp_path / "boxes.parquet"
    assert write_box_index(SAMPLES, csv, index) == 0
    assert read_cohort_annotations(SAMPLES, None, slides=["s1"], box_index=index).empty
