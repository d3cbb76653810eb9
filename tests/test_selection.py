"""Face selection: modes, sort orders, filters and index parsing."""

from __future__ import annotations

import pytest

from face_pipeline.selection import SELECT_MODES, SORT_ORDERS, choose_faces, parse_indices
from face_pipeline.types import DetectedFace


def face(x, y, size, score=0.99, image_index=0):
    points = ((x + 0.3 * size, y + 0.4 * size), (x + 0.7 * size, y + 0.4 * size), (x + 0.5 * size, y + 0.6 * size),
              (x + 0.35 * size, y + 0.75 * size), (x + 0.65 * size, y + 0.75 * size))
    return DetectedFace(box=(x, y, x + size, y + size), score=score, landmarks=points, image_index=image_index)


A = face(300, 10, 50, score=0.95)  # right, top, middle size
B = face(10, 200, 80, score=0.99)  # left, bottom, largest
C = face(150, 100, 20, score=0.70)  # middle, small, weak
IMAGE = [A, B, C]


def selected_faces(faces_per_image, **kwargs):
    """The faces ``choose_faces`` selects, per image in restore order."""
    return [[c.face for c in choices if c.selected] for choices in choose_faces(faces_per_image, **kwargs)]


def test_constants():
    assert SELECT_MODES == ("all", "largest", "indices")
    assert SORT_ORDERS == ("area", "left_to_right", "top_to_bottom", "score")


@pytest.mark.parametrize("sort_by, expected", [
    ("area", [B, A, C]), ("left_to_right", [B, C, A]), ("top_to_bottom", [A, C, B]), ("score", [B, A, C])])
def test_sort_orders(sort_by, expected):
    assert selected_faces([IMAGE], sort_by=sort_by) == [expected]


def test_largest_whatever_the_order():
    for sort_by in SORT_ORDERS:
        assert selected_faces([IMAGE, [C], []], mode="largest", sort_by=sort_by) == [[B], [C], []]


def test_indices_refer_to_positions_after_sorting_per_image():
    assert selected_faces([IMAGE], mode="indices", indices=(0, 2), sort_by="left_to_right") == [[B, A]]
    assert selected_faces([IMAGE], mode="indices", indices=(2, 0), sort_by="left_to_right") == [[A, B]]
    assert selected_faces([IMAGE, [C]], mode="indices", indices=(1, 7)) == [[A], []]  # out of range: skipped
    assert selected_faces([IMAGE], mode="indices", indices=()) == [[]]
    assert selected_faces([IMAGE], mode="indices", indices=(1, 1, 1)) == [[A]]  # a face is never chosen twice


def test_filters_and_cap():
    assert selected_faces([IMAGE], min_size=30) == [[B, A]]
    assert selected_faces([IMAGE], min_size=80) == [[B]]
    assert selected_faces([IMAGE], score_threshold=0.9) == [[B, A]]
    assert selected_faces([IMAGE], max_faces=2, sort_by="top_to_bottom") == [[A, C]]
    assert selected_faces([IMAGE], max_faces=0) == [[B, A, C]]
    assert selected_faces([IMAGE], mode="largest", min_size=100) == [[]]
    assert selected_faces([], mode="all") == []


def test_input_is_not_modified():
    faces = [C, A, B]
    choose_faces([faces], sort_by="area")
    assert faces == [C, A, B]


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "biggest"}, "unknown face selection 'biggest'; choose one of all, largest, indices"),
    ({"sort_by": "size"}, "unknown sort order 'size'; choose one of area, left_to_right"),
    ({"max_faces": -1}, "max_faces and min_size must not be negative"),
    ({"min_size": -2}, "max_faces and min_size must not be negative"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        choose_faces([IMAGE], **kwargs)


@pytest.mark.parametrize("text, expected", [
    ("0,2,3", (0, 2, 3)), ("0-2", (0, 1, 2)), ("1, 4-5", (1, 4, 5)), (" 3 , 1 ,3", (1, 3)), ("", ()),
    ("2 - 4", (2, 3, 4)), ("0,", (0,))])
def test_parse_indices(text, expected):
    assert parse_indices(text) == expected


@pytest.mark.parametrize("text, message", [
    ("a", r"face indices must look like '0,2' or '0-3'; could not read 'a'"),
    ("1;2", "could not read '1;2'"), ("-1", "could not read '-1'"), ("1.5", "could not read '1.5'"),
    ("3-1", "face index range '3-1' runs backwards")])
def test_parse_indices_junk(text, message):
    with pytest.raises(ValueError, match=message):
        parse_indices(text)
