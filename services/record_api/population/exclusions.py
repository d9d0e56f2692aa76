"""Who is kept out of secondary use, from the consent service (the decision point), fetched once per export job
or aggregate request: `GET /consent/secondary-use/excluded`, page by page.

Fail closed: any way of not getting the whole answer (unreachable, slow, an error status, a page of the wrong
shape) raises ExclusionsUnavailable, and the job fails rather than export unfiltered data. The answer is turned
into person ids here: a person is excluded if their NHS number is, if any of their source records carries an
excluded NHS number, or if a person merged into them was excluded (`following merged persons`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.record_api.consent_client import TokenFile
from shared import nhs_number
from shared.errors import ServiceUnavailable
from shared.fhir import NHS_NUMBER_SYSTEM, canonical_system
from shared.schema import Person, SearchParam

PATH = "/consent/secondary-use/excluded"
MAX_PAGES = 100_000
IN_BATCH = 1000  # values per SQL IN list


class ExclusionsUnavailable(ServiceUnavailable):
    """The secondary-use exclusions could not be had in full; nothing may be exported or counted."""


@dataclass
class Exclusions:
    """NHS numbers refused for secondary use (with the deciding rule) and extra categories people withheld."""

    refused: dict[str, str] = field(default_factory=dict)
    withheld: dict[str, frozenset[str]] = field(default_factory=dict)

    def rules(self) -> dict[str, int]:
        counted: dict[str, int] = {}
        for rule in self.refused.values():
            counted[rule] = counted.get(rule, 0) + 1
        return counted


class ExclusionClient:
    """Pages through the consent service's secondary-use answers with the record API's own token."""

    def __init__(self, base_url: str, token_file: str, timeout: float = 10.0, page_size: int = 5000,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._token = TokenFile(token_file)
        self._base = base_url.rstrip("/")
        self._timeout = timeout
        self._page_size = page_size
        self._transport = transport

    def fetch(self, purpose: str, organisation: str | None) -> Exclusions:
        found = Exclusions()
        after = ""
        with httpx.Client(base_url=self._base, timeout=self._timeout, transport=self._transport) as client:
            for _ in range(MAX_PAGES):
                page = self._page(client, purpose, organisation, after)
                _absorb(found, page)
                after = page.get("next_after") or ""
                if not after:
                    return found
        raise ExclusionsUnavailable("the consent service's exclusion list did not end")

    def _page(self, client: httpx.Client, purpose: str, organisation: str | None, after: str) -> dict[str, Any]:
        params = {"purpose": purpose, "_count": str(self._page_size)}
        if organisation:
            params["organisation"] = organisation
        if after:
            params["after"] = after
        try:
            token = self._token.read()
        except ServiceUnavailable as exc:
            raise ExclusionsUnavailable(exc.message) from None
        try:
            response = client.get(PATH, params=params, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise ExclusionsUnavailable(f"the consent service is unreachable ({type(exc).__name__}), so nothing "
                                        "was exported or counted") from None
        if response.status_code != 200:
            raise ExclusionsUnavailable(f"the consent service answered HTTP {response.status_code} for the "
                                        "secondary-use exclusions, so nothing was exported or counted")
        try:
            return _checked(response.json())
        except (ValueError, TypeError, KeyError) as exc:
            raise ExclusionsUnavailable(f"the consent service's exclusion list had the wrong shape "
                                        f"({type(exc).__name__})") from None


def _checked(page: Any) -> dict[str, Any]:
    if not isinstance(page, dict) or not isinstance(page["excluded"], list) or not isinstance(page["withheld"],
                                                                                               list):
        raise TypeError("page")
    for item in page["excluded"]:
        if not nhs_number.is_valid(str(item["nhs_number"])) or not isinstance(item["rule"], str):
            raise ValueError("excluded entry")
    for item in page["withheld"]:
        if not isinstance(item["labels"], list):
            raise ValueError("withheld entry")
    after = page.get("next_after")
    if after is not None and not isinstance(after, str):
        raise TypeError("next_after")
    return page


def _absorb(found: Exclusions, page: dict[str, Any]) -> None:
    for item in page["excluded"]:
        found.refused[str(item["nhs_number"])] = item["rule"]
    for item in page["withheld"]:
        found.withheld[str(item["nhs_number"])] = frozenset(str(code) for code in item["labels"])


# ---------------------------------------------------------------- from NHS numbers to persons


@dataclass(frozen=True)
class PersonExclusions:
    """Person ids refused for secondary use, and per person id the extra categories withheld."""

    refused: frozenset[str]
    withheld: dict[str, frozenset[str]]


def resolve(session: Session, exclusions: Exclusions) -> PersonExclusions:
    """Turn NHS numbers into person ids: by the person's NHS number, by any linked source record's NHS number
    (a person whose number is not verified yet is still the same citizen), and through merges."""
    refused = _persons_with(session, exclusions.refused.keys())
    withheld: dict[str, set[str]] = {}
    for number, codes in exclusions.withheld.items():
        for person_id in _persons_with(session, [number]):
            withheld.setdefault(person_id, set()).update(codes)
    survivors = merge_survivors(session)
    refused |= {final_person(survivors, p) for p in refused}
    for person_id in list(withheld):
        withheld.setdefault(final_person(survivors, person_id), set()).update(withheld[person_id])
    return PersonExclusions(frozenset(refused), {p: frozenset(c) for p, c in withheld.items()})


def _persons_with(session: Session, numbers: Iterable[str]) -> set[str]:
    wanted = sorted(set(numbers))
    found: set[str] = set()
    for start in range(0, len(wanted), IN_BATCH):
        found |= set(session.scalars(select(Person.id).where(Person.nhs_number.in_(wanted[start:start + IN_BATCH]))))
    return found | _persons_by_source_identifier(session, wanted)


def _persons_by_source_identifier(session: Session, numbers: list[str]) -> set[str]:
    """Source Patients carrying an excluded NHS number, found through the identifier search rows."""
    found: set[str] = set()
    for start in range(0, len(numbers), IN_BATCH):
        rows = session.execute(select(SearchParam.person_id, SearchParam.system).where(
            SearchParam.resource_type == "Patient", SearchParam.param == "identifier",
            SearchParam.code.in_(numbers[start:start + IN_BATCH])))
        found |= {person for person, system in rows if person and canonical_system(system) == NHS_NUMBER_SYSTEM}
    return found


def merge_survivors(session: Session) -> dict[str, str]:
    """Merged person -> the person it was merged into."""
    return {p: into for p, into in session.execute(select(Person.id, Person.merged_into).where(
        Person.status == "merged", Person.merged_into.is_not(None)))}


def final_person(survivors: dict[str, str], person_id: str) -> str:
    seen = {person_id}
    while person_id in survivors:
        person_id = survivors[person_id]
        if person_id in seen:
            break
        seen.add(person_id)
    return person_id

