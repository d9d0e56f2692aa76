"""Stable paging: an opaque cursor holds the sort key of the item a page ended (or began) at, so a page is
found by key rather than by offset and inserts elsewhere never shift or repeat entries (keyset paging).

A cursor is bound to its query: used with different parameters it is refused rather than misread.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from shared.errors import InvalidInput

T = TypeVar("T")
Key = tuple[str, ...]


@dataclass(frozen=True)
class Cursor:
    direction: str  # "n": the page after `key`; "p": the page before `key`
    key: Key
    fingerprint: str
    # The page from `key` on ("n") or up to `key` ("p"), its item included: the link out of an empty page, whose
    # cursor's item (if it still exists) is on no other page (`paginate`).
    inclusive: bool = False

    def encode(self) -> str:
        data: dict[str, object] = {"d": self.direction, "k": list(self.key), "q": self.fingerprint}
        if self.inclusive:
            data["i"] = 1  # only when set: every cursor issued before it existed reads as it did
        raw = json.dumps(data, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def fingerprint(items: Iterable[tuple[str, str]]) -> str:
    """What a cursor is bound to: the request's parameters other than the cursor itself, in any order."""
    kept = sorted((k, v) for k, v in items if k != "_cursor")
    return hashlib.sha256(json.dumps(kept).encode()).hexdigest()[:16]


def decode_cursor(text: str, expected_fingerprint: str, *, key_length: int | None = None,
                  numeric: bool = False) -> Cursor:
    """The cursor `text` stands for, or 400. `key_length` is how many parts the keys of the search that issued it
    have, and `numeric` whether they are whole numbers (row ids): a key of any other shape was not issued here,
    and reading it (`key[0]`, `int(key[0])`, comparing it with keys of another length) would fail or mislead."""
    try:
        padded = text + "=" * (-len(text) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        direction, key, bound, inclusive = data["d"], data["k"], data["q"], data.get("i", 0)
        valid = direction in ("n", "p") and inclusive in (0, 1) and _is_key(key, key_length, numeric)
    except (ValueError, KeyError, TypeError, UnicodeError):
        valid = False
    if not valid:
        raise InvalidInput("parameter '_cursor' is not a page position this server issued", expression=["_cursor"])
    if bound != expected_fingerprint:
        raise InvalidInput("parameter '_cursor' belongs to a different search; follow the links of this search",
                           expression=["_cursor"])
    return Cursor(direction, tuple(key), bound, inclusive == 1)


_LARGEST_ROW_ID = 2**63 - 1  # a bigint: a larger number would fail in SQL, not as a bad cursor


def _is_key(key: object, length: int | None, numeric: bool) -> bool:
    if not isinstance(key, list) or not key or not all(isinstance(k, str) for k in key):
        return False  # every cursor issued has at least one part: an empty key is forged
    if length is not None and len(key) != length:
        return False
    return not numeric or all(k.isascii() and k.isdigit() and int(k) <= _LARGEST_ROW_ID for k in key)


@dataclass
class Page(Generic[T]):
    items: list[T]
    next_key: Key | None
    previous_key: Key | None
    inclusive: bool = False  # the links lead through their key's item (an empty page's: see `paginate`)

    def cursor(self, direction: str, fingerprint: str) -> str | None:
        """The encoded cursor of the page after ("n") or before ("p") this one; None where there is none."""
        key = self.next_key if direction == "n" else self.previous_key
        return Cursor(direction, key, fingerprint, self.inclusive).encode() if key is not None else None


def paginate(ordered: Sequence[T], key: Callable[[T], Key], descending: bool, count: int,
             cursor: Cursor | None) -> Page[T]:
    """One page of `ordered` (already in presentation order, visible items only, each key unique and ordered as
    the items are) at the cursor's position. Keys are made only for the items compared with the cursor and the
    page's two ends: a first page of a long record needs two, not one per item.

    A page links onward from its last item and back from its first, exclusive, so under stable data each item is
    on exactly one page either way. An empty page (the items beyond a stale or forged cursor are gone) has no item
    to link from: it links from the cursor's key inclusive, as the item there, if it still exists, ends (or
    begins) no other page the client can reach."""
    if count <= 0:
        return Page([], None, None)  # a total only: there are no pages to link
    if cursor is None:
        return _page(ordered, key, 0, count)
    split = _split(ordered, key, descending, cursor)
    if cursor.direction == "n":
        page = _page(ordered, key, split, split + count)
        if not page.items and split > 0:
            return Page([], None, cursor.key, inclusive=True)
        return page
    page = _page(ordered, key, max(0, split - count), split)
    if not page.items and split < len(ordered):
        return Page([], cursor.key, None, inclusive=True)
    return page


def _split(ordered: Sequence[T], key: Callable[[T], Key], descending: bool, cursor: Cursor) -> int:
    """Where the cursor's key falls in `ordered`: the index of the first item of the page after it ("n") or the
    one past the last item of the page before it ("p"), the item at the key on the side `inclusive` puts it."""
    def beyond(k: Key) -> bool:  # whether k comes after the cursor's key in presentation order
        return k < cursor.key if descending else k > cursor.key

    def reached(k: Key) -> bool:  # ... or is the cursor's key itself
        return k == cursor.key or beyond(k)

    # "n" starts after the key, "n" inclusive at it; "p" ends before it, "p" inclusive after it.
    test = beyond if (cursor.direction == "n") != cursor.inclusive else reached
    return next((i for i, item in enumerate(ordered) if test(key(item))), len(ordered))


def _page(ordered: Sequence[T], key: Callable[[T], Key], start: int, end: int) -> Page[T]:
    end = min(end, len(ordered))
    items = list(ordered[start:end])
    return Page(items,
                next_key=key(ordered[end - 1]) if items and end < len(ordered) else None,
                previous_key=key(ordered[start]) if items and start > 0 else None)
