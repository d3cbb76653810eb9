"""Face selection: modes, sort orders, filters and index parsing."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from face_pipeline.budgets import MAX_FACES_PER_IMAGE
from face_pipeline.selection import (
    CAP_REASON,
    MAX_FACE_INDEX,
    SELECT_MODES,
    SORT_ORDERS,
    choose_faces,
    parse_indices,
    selection_notes,
)
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


@pytest.mark.parametrize("text, message", [
    ("0-99999999999", r"face index 99999999999 in '0-99999999999' is above 9999, the largest accepted"),
    ("3, 10000", r"face index 10000 in '10000' is above 9999"),
    ("9" * 5000, r"the text is 5000 characters long, more than the 1000 read"),
    (",".join(["0-1"] * 400), r"the text is 1599 characters long"),
    ("\u0663", r"could not read '\u0663'"),  # an Arabic-Indic 3: digits are 0-9 only
])
def test_parse_indices_is_bounded(text, message):
    """Issue 22: one POST with indices "0-99999999999" expanded the range in C and got the server OOM-killed."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=message):
            parse_indices(text)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 1.0 and peak < 1 << 20


def test_parse_indices_merges_ranges_before_expanding():
    tracemalloc.start()
    start = time.perf_counter()
    try:
        many = parse_indices(",".join(["0-9999"] * 142))  # 993 characters: every range is the whole allowed span
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert many == tuple(range(MAX_FACE_INDEX + 1)) and seconds < 1.0 and peak < 4 << 20
    assert parse_indices("5-7, 0-2, 1-6, 9") == (0, 1, 2, 3, 4, 5, 6, 7, 9)
    assert parse_indices("9999") == (9999,)


def test_selection_notes_say_how_many_faces_an_image_has():
    one = choose_faces([IMAGE], mode="indices", indices=(1, 5, 7))
    assert selection_notes(one, mode="indices", indices=(1, 5, 7)) == [
        "face indices 5, 7 do not exist: the image has 3 faces (indices 0-2)"]
    small = choose_faces([IMAGE], mode="indices", indices=(4,), min_size=40)  # C is filtered out
    assert selection_notes(small, mode="indices", indices=(4,)) == [
        "face index 4 does not exist: the image has 2 faces (indices 0-1), 1 more filtered out"]
    batch = choose_faces([IMAGE, [A], []], mode="indices", indices=(2,))
    assert selection_notes(batch, mode="indices", indices=(2,)) == [
        "face index 2 does not exist in 2 of 3 images (image 1 has 1 face (index 0); image 2 has no face)",
        "no face found in 1 of 3 image(s) (index 2): returned unchanged"]
    assert selection_notes(choose_faces([IMAGE, []]), mode="all") == [
        "no face found in 1 of 2 image(s) (index 1): returned unchanged"]
    filtered = choose_faces([IMAGE], min_size=500)
    assert selection_notes(filtered, mode="all") == [
        "faces were found but none selected in 1 of 1 image(s) (index 0; the face report says why): returned "
        "unchanged"]
    assert selection_notes(choose_faces([IMAGE]), mode="all") == []


def test_faces_per_image_are_capped_with_a_note():
    """A detector that reports thousands of "faces" costs at most MAX_FACES_PER_IMAGE forwards, and says so."""
    crowd = [face(10 * (i % 100), 10 * (i // 100), 8, score=0.9) for i in range(MAX_FACES_PER_IMAGE + 7)]
    choices = choose_faces([crowd, [A]])
    assert [sum(c.selected for c in per_image) for per_image in choices] == [MAX_FACES_PER_IMAGE, 1]
    assert [c.reason for c in choices[0] if not c.selected] == [CAP_REASON] * 7
    assert sum(c.selected for c in choose_faces([crowd], max_faces=MAX_FACES_PER_IMAGE + 5)[0]) == MAX_FACES_PER_IMAGE
    assert sum(c.selected for c in choose_faces([crowd], max_faces=3)[0]) == 3
    notes = selection_notes(choices, mode="all", indices=())
    assert f"more than {MAX_FACES_PER_IMAGE} faces in 1 of 2 image(s) (index 0): only the first " \
           f"{MAX_FACES_PER_IMAGE} in the sort order are restored" in " ".join(notes)
