"""Paging links followed after the data moved under them: an empty page reached with a stale cursor (what lay
beyond it deleted or sealed since the link was made, persons merged) or a forged one still leads, both ways, to
every item left, each once, on searches, type history, `$everything`, Patient searches and the audit trail."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from tests.integration.record_api.helpers import resources
from tests.support import data
from tests.support.record_store import RecordStore, observation

pytestmark = pytest.mark.integration


def _links(body: dict) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in body["link"]}


def _ids(body: dict) -> list[str]:
    return [r["id"] for r in resources(body)]


def _pageback(record_store: RecordStore) -> str:
    """A person the acute trust treats, with seven Observations from their GP (no duplicates, no ties; recorded
    elsewhere, so a seal withholds them from the acute trust)."""
    person = record_store.person()
    record_store.source_patient(person, org=data.ACUTE_ODS, system="PAS", family="Pageback")
    for day in range(1, 8):
        record_store.clinical(person, observation("8480-6", "Systolic BP", f"2025-03-{day:02d}", 110 + day),
                              org=data.GP_ODS, system="EMIS")
    return person


def _gone(record_store: RecordStore, how: str) -> Callable[[str], None]:
    """How an Observation leaves the caller's view: deleted, or sealed (a `V` label the acute trust may not see,
    which hides every earlier version too)."""
    if how == "deleted":
        return lambda i: record_store.delete("Observation", i)
    return lambda i: record_store.update("Observation", i, {}, labels=("V",))


def _walk(api, url: str, relation: str, headers: dict) -> list[list[str]]:
    pages = [api.get(url, headers=headers).json()]
    while relation in _links(pages[-1]):
        pages.append(api.get(_links(pages[-1])[relation], headers=headers).json())
        assert len(pages) < 20
    return [_ids(page) for page in pages]


URLS = {
    "search -_lastUpdated": "/fhir/Observation?patient={p}&_count=2",
    "search date": "/fhir/Observation?patient={p}&_count=2&_sort=date",
    "search -_id": "/fhir/Observation?patient={p}&_count=2&_sort=-_id",
    "history": "/fhir/Observation/_history?patient={p}&_count=2",
    "$everything": "/fhir/Patient/{p}/$everything?_count=2",
}
# History lists deletions (a new version): only sealing takes an entry out of it.
CASES = [(name, how) for name in URLS for how in ("deleted", "sealed") if not (name == "history" and how == "deleted")]


@pytest.mark.parametrize("name,how", CASES)
def test_the_way_back_from_an_empty_page_past_the_end_reaches_the_cursors_own_item(api, record_store, callers,
                                                                                   name, how) -> None:
    person = _pageback(record_store)
    url = URLS[name].format(p=person)
    forwards = _walk(api, url, "next", callers.acute())
    assert len(forwards) >= 4
    second = api.get(url, headers=callers.acute()).json()
    second = api.get(_links(second)["next"], headers=callers.acute()).json()
    stale = _links(second)["next"]  # the page after the cursor's item: the last of the second page
    shown = [i for page in forwards[:2] for i in page]
    for resource_id in (i for page in forwards[2:] for i in page):
        _gone(record_store, how)(resource_id)
    empty = api.get(stale, headers=callers.acute()).json()
    assert _ids(empty) == [] and "next" not in _links(empty)
    backwards = _walk(api, _links(empty)["previous"], "previous", callers.acute())
    assert [i for page in backwards[::-1] for i in page] == shown
    assert backwards == forwards[1::-1]  # the pages as they were, the cursor's item ending the nearer one


@pytest.mark.parametrize("name,how", CASES)
def test_the_way_on_from_an_empty_page_before_the_start_reaches_the_cursors_own_item(api, record_store, callers,
                                                                                     name, how) -> None:
    person = _pageback(record_store)
    url = URLS[name].format(p=person)
    forwards = _walk(api, url, "next", callers.acute())
    third = api.get(url, headers=callers.acute()).json()
    for _ in range(2):
        third = api.get(_links(third)["next"], headers=callers.acute()).json()
    stale = _links(third)["previous"]  # the page before the cursor's item: the first of the third page
    everything_after = [i for page in forwards[2:] for i in page]
    leading = [person] if name == "$everything" else []  # the Patient leads the first page, whichever way reached
    for resource_id in (i for page in forwards[:2] for i in page if i != person):
        _gone(record_store, how)(resource_id)
    empty = api.get(stale, headers=callers.acute()).json()
    assert _ids(empty) == leading and "previous" not in _links(empty)
    onwards = _walk(api, _links(empty)["next"], "next", callers.acute())
    assert [i for page in onwards for i in page] == everything_after
    assert onwards == forwards[2:]


@pytest.mark.parametrize("name", URLS)
def test_walking_back_from_the_last_page_shows_every_page_again(api, record_store, callers, name) -> None:
    """Stable data: the previous links from the last page give the same pages, the first one included (for
    `$everything`, with the Patient leading it)."""
    person = _pageback(record_store)
    url = URLS[name].format(p=person)
    forwards = _walk(api, url, "next", callers.acute())
    last = api.get(url, headers=callers.acute()).json()
    while "next" in _links(last):
        last = api.get(_links(last)["next"], headers=callers.acute()).json()
    backwards = _walk(api, _links(last)["previous"], "previous", callers.acute())
    assert backwards == forwards[-2::-1]


@pytest.mark.parametrize("name", URLS)
def test_a_link_followed_with_another_count_is_refused_naming_the_cursor(api, record_store, callers, name) -> None:
    """A cursor is bound to its query, page size included: a client wanting other pages starts again."""
    person = _pageback(record_store)
    first = api.get(URLS[name].format(p=person), headers=callers.acute()).json()
    changed = api.get(_links(first)["next"].replace("_count=2", "_count=3"), headers=callers.acute())
    assert changed.status_code == 400 and changed.json()["issue"][0]["expression"] == ["_cursor"]


def _pagestale(record_store: RecordStore) -> list[str]:
    """Seven persons called Pagestale in a known id order, all treated by the acute trust (a page examines no
    stranger): their ids in that order."""
    persons = [record_store.person(person_id=f"pagestale-{n:02d}") for n in range(7)]
    for n, person in enumerate(persons):
        record_store.source_patient(person, org=data.ACUTE_ODS, system="PAS", family="Pagestale", given=f"P{n}")
    return persons


def _nth_page(api, url: str, n: int, headers: dict) -> dict:
    page = api.get(url, headers=headers).json()
    for _ in range(n):
        page = api.get(_links(page)["next"], headers=headers).json()
    return page


PATIENT_SORTS = ["_id", "-_id"]


@pytest.mark.parametrize("sort", PATIENT_SORTS)
def test_patient_search_the_way_back_from_an_empty_page_past_the_end_reaches_the_cursors_person(
        api, record_store, callers, sort) -> None:
    """The persons after the second page merged (into the first person) since its next link was made: the walk
    has no one to examine, and the way back starts at the cursor's own person, who ends the second page."""
    order = _pagestale(record_store)[::-1 if sort.startswith("-") else 1]
    url = f"/fhir/Patient?family=pagestale&_count=2&_sort={sort}"
    forwards = _walk(api, url, "next", callers.acute())
    assert forwards == [order[0:2], order[2:4], order[4:6], order[6:]]
    stale = _links(_nth_page(api, url, 1, callers.acute()))["next"]
    for retired in order[4:]:
        record_store.merge(retired, order[0])
    empty = api.get(stale, headers=callers.acute()).json()
    assert _ids(empty) == [] and "next" not in _links(empty)
    assert _walk(api, _links(empty)["previous"], "previous", callers.acute()) == forwards[1::-1]


@pytest.mark.parametrize("sort", PATIENT_SORTS)
def test_patient_search_the_way_on_from_an_empty_page_before_the_start_reaches_the_cursors_person(
        api, record_store, callers, sort) -> None:
    """The mirror: the persons before the third page merged (into the last person) since its previous link was
    made."""
    order = _pagestale(record_store)[::-1 if sort.startswith("-") else 1]
    url = f"/fhir/Patient?family=pagestale&_count=2&_sort={sort}"
    forwards = _walk(api, url, "next", callers.acute())
    stale = _links(_nth_page(api, url, 2, callers.acute()))["previous"]
    for retired in order[:4]:
        record_store.merge(retired, order[-1])
    empty = api.get(stale, headers=callers.acute()).json()
    assert _ids(empty) == [] and "previous" not in _links(empty)
    assert _walk(api, _links(empty)["next"], "next", callers.acute()) == forwards[2:]


@pytest.mark.parametrize("sort", PATIENT_SORTS)
@pytest.mark.parametrize("relation,page,at", [("next", 1, 3), ("previous", 2, 4)])
def test_patient_search_an_empty_page_leads_to_the_cursors_person_left_alone(api, record_store, callers, sort,
                                                                            relation, page, at) -> None:
    """Everyone else merged into the cursor's person (the second page's last, the third page's first): the empty
    page the link leads to still leads to them."""
    order = _pagestale(record_store)[::-1 if sort.startswith("-") else 1]
    url = f"/fhir/Patient?family=pagestale&_count=2&_sort={sort}"
    stale = _links(_nth_page(api, url, page, callers.acute()))[relation]
    for retired in order[:at] + order[at + 1:]:
        record_store.merge(retired, order[at])
    empty = api.get(stale, headers=callers.acute()).json()
    back = "previous" if relation == "next" else "next"
    assert _ids(empty) == [] and relation not in _links(empty)
    assert _walk(api, _links(empty)[back], back, callers.acute()) == [[order[at]]]


def _forged(link: str, key: int, direction: str) -> str:
    """`link` with its cursor moved to another row and direction: what a client could write for itself (a cursor
    is bound to its query, not signed)."""
    parts = urlsplit(link)
    query = dict(parse_qsl(parts.query))
    text = query["_cursor"]
    cursor = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    cursor |= {"d": direction, "k": [str(key)]}
    query["_cursor"] = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode().rstrip("=")
    return urlunsplit(parts._replace(query=urlencode(query)))


def _audited(api, record_store: RecordStore, callers) -> tuple[str, list[list[str]]]:
    """A person read five times by the acute trust; the URL of their audit trail two to a page, and its pages."""
    person = record_store.person()
    record_store.source_patient(person, org=data.ACUTE_ODS, system="PAS", family="Audited")
    for _ in range(5):
        assert api.get(f"/fhir/Patient/{person}", headers=callers.acute()).status_code == 200
    url = f"/fhir/AuditEvent?patient={person}&_count=2"
    return url, _walk(api, url, "next", callers.privacy_officer())


def test_audit_search_the_way_back_from_an_empty_page_past_the_end_reaches_the_cursors_event(
        api, record_store, callers) -> None:
    """A next cursor forged at the oldest event (whose page, had it been issued, would be empty): the way back
    starts at that event, so it is on a page."""
    url, forwards = _audited(api, record_store, callers)
    shown = [i for page in forwards for i in page]
    assert len(shown) == 5 and len(forwards) == 3
    first = api.get(url, headers=callers.privacy_officer()).json()
    empty = api.get(_forged(_links(first)["next"], int(shown[-1]), "n"), headers=callers.privacy_officer()).json()
    assert _ids(empty) == [] and "next" not in _links(empty)
    backwards = _walk(api, _links(empty)["previous"], "previous", callers.privacy_officer())
    assert [i for page in backwards[::-1] for i in page] == shown
    assert backwards == [shown[3:], shown[1:3], shown[:1]]


def test_audit_search_the_way_on_from_an_empty_page_before_the_start_reaches_the_cursors_event(
        api, record_store, callers) -> None:
    """The mirror: a previous cursor forged at the newest event."""
    url, forwards = _audited(api, record_store, callers)
    shown = [i for page in forwards for i in page]
    first = api.get(url, headers=callers.privacy_officer()).json()
    empty = api.get(_forged(_links(first)["next"], int(shown[0]), "p"), headers=callers.privacy_officer()).json()
    assert _ids(empty) == [] and "previous" not in _links(empty)
    assert _walk(api, _links(empty)["next"], "next", callers.privacy_officer()) == forwards
