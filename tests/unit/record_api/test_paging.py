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
    assert page.items == [] and page.next_key is None and page.previous_key == ("z",) and page.inclusive


def _follow(ordered: list[str], descending: bool, count: int, cursor: Cursor, direction: str) -> list[list[str]]:
    """The pages seen following the links one way ("n" or "p") from `cursor` until there are none."""
    pages = []
    for _ in range(len(ordered) + 2):
        page = paginate(ordered, lambda x: (x,), descending, count, cursor)
        pages.append(page.items)
        encoded = page.cursor(direction, "q")
        if encoded is None:
            return pages
        cursor = decode_cursor(encoded, "q")
    raise AssertionError("the links go round in circles")


@given(st.sets(st.integers(0, 99), min_size=1, max_size=30), st.integers(1, 5), st.booleans(), st.data())
def test_an_empty_page_past_a_stale_cursor_leads_back_to_every_item_before_it_once(numbers, count, descending,
                                                                                  data) -> None:
    """The items after a next link's cursor vanish (deleted, or withheld by consent since): the empty page it now
    leads to links back through the cursor's own item, which ended the page before and is on no other page. The
    cursor's item may have gone too."""
    ordered = sorted((f"{n:02d}" for n in numbers), reverse=descending)
    mark = data.draw(st.integers(0, len(ordered) - 1))
    left = ordered[:mark + 1] if data.draw(st.booleans()) else ordered[:mark]
    pages = _follow(left, descending, count, Cursor("n", (ordered[mark],), "q"), "p")
    assert pages[0] == [] and [x for page in pages[:0:-1] for x in page] == left
    assert all(0 < len(p) <= count for p in pages[1:])


@given(st.sets(st.integers(0, 99), min_size=1, max_size=30), st.integers(1, 5), st.booleans(), st.data())
def test_an_empty_page_before_a_stale_cursor_leads_on_to_every_item_after_it_once(numbers, count, descending,
                                                                                 data) -> None:
    """The mirror image: the items before a previous link's cursor vanish."""
    ordered = sorted((f"{n:02d}" for n in numbers), reverse=descending)
    mark = data.draw(st.integers(0, len(ordered) - 1))
    left = ordered[mark:] if data.draw(st.booleans()) else ordered[mark + 1:]
    pages = _follow(left, descending, count, Cursor("p", (ordered[mark],), "q"), "n")
    assert pages[0] == [] and [x for page in pages[1:] for x in page] == left


@given(st.sets(st.integers(0, 99), min_size=2, max_size=30), st.integers(1, 5), st.booleans(), st.data())
def test_a_cursor_whose_item_is_gone_still_pages_from_its_place(numbers, count, descending, data) -> None:
    """A cursor holds a key, not an item: with its item deleted, the next page starts after the key's place and
    the previous page ends before it, and the links from either page miss nothing and repeat nothing."""
    ordered = sorted((f"{n:02d}" for n in numbers), reverse=descending)
    mark = data.draw(st.integers(0, len(ordered) - 1))
    left = ordered[:mark] + ordered[mark + 1:]
    onwards = _follow(left, descending, count, Cursor("n", (ordered[mark],), "q"), "n")
    back = _follow(left, descending, count, Cursor("p", (ordered[mark],), "q"), "p")
    assert [x for page in onwards for x in page] == ordered[mark + 1:]
    assert [x for page in back[::-1] for x in page] == ordered[:mark]


def test_a_cursor_pages_from_its_place_whatever_the_count() -> None:
    """Keyset positions do not depend on the page size: a cursor read with another count (the API refuses one
    used with another `_count`, as bound to its query) starts or ends its page at the same item."""
    ordered = [f"{n:02d}" for n in range(10)]
    assert paginate(ordered, lambda x: (x,), False, 4, Cursor("n", ("03",), "q")).items == ["04", "05", "06", "07"]
    assert paginate(ordered, lambda x: (x,), False, 2, Cursor("p", ("03",), "q")).items == ["01", "02"]


def test_equal_sort_values_page_by_the_whole_key() -> None:
    """Items tied on the sort value (the same date) are told apart by the rest of the key (type and id), so a
    cursor between them splits them exactly."""
    ordered = sorted([("2025-03-01", "Observation", f"o{i}") for i in range(5)] + [("2025-03-02", "Condition", "c")],
                     reverse=True)
    pages, cursor = [], None
    while True:
        page = paginate(ordered, lambda x: x, True, 2, cursor)
        pages.append(page.items)
        if page.next_key is None:
            break
        cursor = Cursor("n", page.next_key, "q")
    assert [x for p in pages for x in p] == ordered
    back = paginate(ordered, lambda x: x, True, 2, Cursor("p", pages[2][0], "q"))
    assert back.items == pages[1]


def test_a_count_of_zero_has_no_pages_to_link() -> None:
    page = paginate(["a", "b"], lambda x: (x,), False, 0, Cursor("n", ("a",), "q"))
    assert page.items == [] and page.cursor("n", "q") is None and page.cursor("p", "q") is None


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
    through = Cursor("p", cursor.key, stamp, inclusive=True)
    assert decode_cursor(through.encode(), stamp) == through and through.encode() != cursor.encode()


def test_an_inclusive_mark_that_was_never_issued_is_refused() -> None:
    import base64
    import json

    raw = json.dumps({"d": "n", "k": ["a"], "q": "q", "i": 2}).encode()
    with pytest.raises(InvalidInput, match="not a page position"):
        decode_cursor(base64.urlsafe_b64encode(raw).decode(), "q")


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
