"""Keyset paging: every item exactly once walking forward, the same pages walking back, cursors bound to
their query."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.record_api.paging import Cursor, decode_cursor, fingerprint, paginate
from shared.errors import InvalidInput


def _walk(items: list[str], count: int, descending: bool) -> list[list[str]]:
    ordered = sorted(items, reverse=descending)
    pages, cursor = [], None
    while True:
        page = paginate(ordered, lambda x: (x,), descending, count, cursor)
        pages.append(page.items)
        if page.next_key is None:
            return pages
        cursor = Cursor("n", page.next_key, "q")


@given(st.sets(st.text(min_size=1, max_size=6), max_size=40), st.integers(1, 7), st.booleans())
def test_walking_forward_sees_every_item_once_in_order(items, count, descending) -> None:
    pages = _walk(sorted(items), count, descending)
    assert [x for page in pages for x in page] == sorted(items, reverse=descending)
    assert all(0 < len(p) <= count for p in pages if items)


@given(st.sets(st.integers(0, 999), min_size=1, max_size=40), st.integers(1, 7))
def test_previous_returns_the_page_before(numbers, count) -> None:
    ordered = [f"{n:04d}" for n in sorted(numbers)]
    pages = _walk(ordered, count, False)
    for before, after in itertools.pairwise(pages):
        back = paginate(ordered, lambda x: (x,), False, count, Cursor("p", (after[0],), "q"))
        assert back.items == before


def test_items_inserted_between_pages_do_not_shift_the_next_page() -> None:
    ordered = ["a", "c", "e", "g"]
    first = paginate(ordered, lambda x: (x,), False, 2, None)
    assert first.items == ["a", "c"]
    later = ["a", "b", "c", "d", "e", "g"]  # two arrive while the caller reads page one
    second = paginate(later, lambda x: (x,), False, 2, Cursor("n", first.next_key, "q"))
    assert second.items == ["d", "e"]


def test_past_the_end_is_an_empty_page_with_a_way_back() -> None:
    page = paginate(["a", "b"], lambda x: (x,), False, 2, Cursor("n", ("z",), "q"))
    assert page.items == [] and page.next_key is None and page.previous_key == ("z",)


def test_cursors_round_trip_and_refuse_tampering_and_reuse() -> None:
    stamp = fingerprint([("patient", "p1"), ("_count", "2")])
    assert stamp == fingerprint([("_count", "2"), ("patient", "p1"), ("_cursor", "whatever")])
    cursor = Cursor("n", ("2026-01-01", "Observation", "o1"), stamp)
    assert decode_cursor(cursor.encode(), stamp) == cursor
    for bad in ("", "not-base64!", Cursor("x", ("k",), stamp).encode()):
        with pytest.raises(InvalidInput):
            decode_cursor(bad, stamp)
    with pytest.raises(InvalidInput, match="different search"):
        decode_cursor(cursor.encode(), fingerprint([("patient", "p2")]))


@pytest.mark.parametrize("key,length,numeric", [((), None, False), (("a", "b"), 3, False), (("a",), 1, True),
                                               (("1", "2"), 1, True), (("1" * 30,), 1, True), (("١٢",), 1, True)])
def test_cursors_whose_key_has_a_shape_never_issued_are_refused(key, length, numeric) -> None:
    """A well-formed cursor is not signed: its key must have the shape the issuing search's keys have, or reading
    it (`key[0]`, `int(key[0])`) fails as a 500."""
    with pytest.raises(InvalidInput, match="not a page position"):
        decode_cursor(Cursor("n", key, "q").encode(), "q", key_length=length, numeric=numeric)
    assert decode_cursor(Cursor("n", ("12",), "q").encode(), "q", key_length=1, numeric=True).key == ("12",)


@pytest.mark.parametrize("sort_key", ["date", "_lastUpdated", "_id"])
@pytest.mark.parametrize("descending", [False, True])
def test_rows_ordered_by_their_instants_page_through_text_cursors_without_loss_or_repeat(sort_key: str,
                                                                                        descending: bool) -> None:
    """Rows are sorted by the instants themselves and cursors carry them as text: both orders must agree, rows
    without a date included, or a page would skip or repeat rows."""
    from datetime import UTC, datetime, timedelta

    from services.record_api.query import Sort
    from services.record_api.service import _cursor_key, _order_key
    from services.record_api.store import CensusRow

    start = datetime(2024, 3, 1, tzinfo=UTC)
    rows = [CensusRow("Observation", f"o{i:02d}", start + timedelta(seconds=i % 4), "ODS", (), "p",
                      sort_date=None if i % 3 == 0 else start + timedelta(days=i % 5, microseconds=i))
            for i in range(17)]
    sort = Sort(sort_key, descending)
    ordered = sorted(rows, key=_order_key(sort), reverse=descending)
    seen, cursor = [], None
    for _ in range(len(rows)):
        page = paginate(ordered, _cursor_key(sort), descending, 4, cursor)
        seen += page.items
        if page.next_key is None:
            break
        cursor = decode_cursor(Cursor("n", page.next_key, "f").encode(), "f")  # as the next request sends it
    assert [r.id for r in seen] == [r.id for r in ordered]
