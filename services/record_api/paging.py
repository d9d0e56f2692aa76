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

    def encode(self) -> str:
        raw = json.dumps({"d": self.direction, "k": list(self.key), "q": self.fingerprint}, separators=(",", ":"))
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
        direction, key, bound = data["d"], data["k"], data["q"]
        valid = direction in ("n", "p") and _is_key(key, key_length, numeric)
    except (ValueError, KeyError, TypeError, UnicodeError):
        valid = False
    if not valid:
        raise InvalidInput("parameter '_cursor' is not a page position this server issued", expression=["_cursor"])
    if bound != expected_fingerprint:
        raise InvalidInput("parameter '_cursor' belongs to a different search; follow the links of this search",
                           expression=["_cursor"])
    return Cursor(direction, tuple(key), bound)


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


def paginate(ordered: Sequence[T], key: Callable[[T], Key], descending: bool, count: int,
             cursor: Cursor | None) -> Page[T]:
    """One page of `ordered` (already in presentation order, visible items only) at the cursor's position. Keys
    are made only for the items compared with the cursor and the page's two ends: a first page of a long record
    needs two, not one per item."""
    def after(k: Key, mark: Key) -> bool:
        return k < mark if descending else k > mark

    if cursor is None:
        start = 0
    elif cursor.direction == "n":
        start = next((i for i, item in enumerate(ordered) if after(key(item), cursor.key)), len(ordered))
    else:
        end = next((i for i, item in enumerate(ordered) if not after(cursor.key, key(item))), len(ordered))
        start = max(0, end - count)
        return _page(ordered, key, start, min(end, start + count))
    page = _page(ordered, key, start, start + count)
    if not page.items and cursor is not None and start > 0:
        page.previous_key = cursor.key  # past the end: still offer the way back
    return page


def _page(ordered: Sequence[T], key: Callable[[T], Key], start: int, end: int) -> Page[T]:
    end = min(end, len(ordered))
    items = list(ordered[start:end])
    return Page(items,
                next_key=key(ordered[end - 1]) if items and end < len(ordered) else None,
                previous_key=key(ordered[start]) if items and start > 0 else None)
