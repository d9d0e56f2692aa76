"""What a stored FHIR Consent says, reduced to the facts the rules engine reasons about.

Parsing happens once, when a person's consents are loaded into the cache, so a decision never walks FHIR JSON.
Every fact keeps the FHIRPath-style location of the provision it came from, so a decision can name it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from services.consent import codes
from shared.fhir import ACT_CODE_SYSTEM, ACT_REASON_SYSTEM, ODS_ORG_SYSTEM, canonical_system
from shared.local_time import LONDON
from shared.ods import normalise as normalise_ods

BASE = "Consent.provision"
# FHIR partial dates: a year, a year and month, or a day, each meaning the whole of that period in England (a day
# written by an English GP or hospital is a day in London: in summer it ends at 23:00 UTC).
_PARTIAL_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


@dataclass(frozen=True, slots=True)
class Restriction:
    """One nested deny provision's effect: a category withheld, or an organisation denied."""

    code: str
    provision: str


@dataclass(frozen=True, slots=True)
class ConsentFacts:
    """One Consent (current version) as the rules see it."""

    id: str
    version_id: int
    kind: str  # preferences | dissent | consent | safety-override
    status: str
    author_kind: str  # citizen | professional
    author_ods: str | None
    author_role: str | None
    recorded_at: datetime  # when this service recorded the current version (server time)
    stated_at: datetime  # when the statement was made, never after recorded_at: the order "newest wins" uses
    starts_at: datetime  # in force from: provision.period.start, else dateTime (the start of a partial date)
    ends_at: datetime | None  # provision.period.end: expired from here (the end of a partial date)
    stance: str | None  # share | object | upheld | declined (None: says nothing about direct care)
    stance_code: str | None  # the source code behind the stance (e.g. SNOMED 416409005), for the reason
    withheld: tuple[Restriction, ...] = ()
    denied_organisations: tuple[Restriction, ...] = ()
    secondary_use_opt_out: str | None = None  # the provision recording the National Data Opt-out
    about_sharing: bool = True  # scope patient-privacy; any other scope (treatment, research) is not a choice here

    def in_force(self, now: datetime) -> bool:
        """A sharing choice, active, started, and not expired."""
        return (self.about_sharing and self.status == "active" and self.starts_at <= now
                and (self.ends_at is None or self.ends_at > now))

    def order_key(self) -> tuple[datetime, datetime, str, int]:
        """Oldest first: when stated, then when recorded here, then id and version, so the later-recorded of two
        statements made at the same time wins, and the answer never depends on how consents were listed."""
        return self.stated_at, self.recorded_at, self.id, self.version_id


def utc(moment: datetime) -> datetime:
    """An aware datetime: SQLite hands back naive ones, which are UTC here."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_datetime(value: Any) -> datetime | None:
    """A FHIR date or dateTime as an aware UTC datetime, or None: the start of a partial date, which names a period
    in England ("2026-07-01" starts at midnight in London, 2026-06-30T23:00Z), and naive times as UTC."""
    bounds = _bounds(value)
    return bounds[0] if bounds else None


def range_end(value: Any) -> datetime | None:
    """The end of a FHIR date or dateTime, exclusive: the moment after the whole year, month or day a partial
    date names in England ("2026-07-01" ends at midnight in London, 2026-07-01T23:00Z), or the dateTime itself."""
    bounds = _bounds(value)
    return bounds[1] if bounds else None


def _bounds(value: Any) -> tuple[datetime, datetime] | None:
    if not isinstance(value, str) or not value:
        return None
    partial = _PARTIAL_DATE.fullmatch(value)
    if partial:
        return _partial_bounds(*partial.groups())
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    moment = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return moment, moment


def _partial_bounds(year: str, month: str | None, day: str | None) -> tuple[datetime, datetime] | None:
    try:
        first = date(int(year), int(month or 1), int(day or 1))
        if day:
            after = first + timedelta(days=1)
        elif month:
            after = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
        else:
            after = first.replace(year=first.year + 1)
        return _midnight_in_england(first), _midnight_in_england(after)
    except (ValueError, OverflowError):
        return None


def _midnight_in_england(day: date) -> datetime:
    """The moment `day` begins in London, in UTC. Midnight is never skipped or repeated there (the clocks change at
    01:00 UTC), so it is one unambiguous instant: a day at a clock change is 23 or 25 hours long."""
    return datetime.combine(day, time(), tzinfo=LONDON).astimezone(UTC)


def facts_from(*, id: str, version_id: int, kind: str, status: str, author_kind: str, author_ods: str | None,
               author_role: str | None, recorded_at: datetime, body: dict[str, Any]) -> ConsentFacts:
    """The facts of one stored Consent; `body` has already passed validation when it was recorded."""
    provision = body.get("provision") or {}
    period = provision.get("period") or {}
    recorded = utc(recorded_at)
    claimed = _bounds(period.get("start")) or _bounds(body.get("dateTime")) or (recorded, recorded)
    stance, stance_code = stance_of(kind, provision)
    withheld, denied, opt_out = _restrictions(provision.get("provision") or [])
    return ConsentFacts(
        id=id, version_id=version_id, kind=kind, status=status, author_kind=author_kind,
        author_ods=ods_code(author_ods) if author_ods else None, author_role=author_role, recorded_at=recorded,
        stated_at=_stated_at(claimed, recorded), starts_at=claimed[0], ends_at=range_end(period.get("end")),
        stance=stance, stance_code=stance_code, withheld=withheld, denied_organisations=denied,
        secondary_use_opt_out=opt_out, about_sharing=is_about_sharing(body),
    )


def _stated_at(claimed: tuple[datetime, datetime], recorded: datetime) -> datetime:
    """When a statement was made, for ordering. A statement cannot have been made after this service received
    it, so a future dateTime cannot leapfrog statements recorded after it; a date without a time means "some
    time that day" (in England), so it is placed at the last moment of the day, or when we received it if that was
    earlier (a GP dissent dated today and recorded after the citizen's save today is the newer statement)."""
    latest_possible = claimed[1] - timedelta(microseconds=1) if claimed[1] > claimed[0] else claimed[1]
    return min(latest_possible, recorded)


def is_about_sharing(body: dict[str, Any]) -> bool:
    """Is this Consent a data-sharing choice (scope patient-privacy)? A treatment or research consent from a
    source record says nothing about sharing the record for care (docs/CONTRACTS.md §1.5)."""
    scope = body.get("scope") or {}
    return any(coding.get("system") == codes.CONSENT_SCOPE_SYSTEM and coding.get("code") == codes.PATIENT_PRIVACY
               for coding in scope.get("coding") or [] if isinstance(coding, dict))


def ods_code(value: str) -> str:
    """An ODS organisation code as compared everywhere: no surrounding spaces, upper case ("rh8 " is RH8)."""
    return normalise_ods(value)


def stance_of(kind: str, provision: dict[str, Any]) -> tuple[str | None, str | None]:
    """What the base provision says about sharing for direct care, and the code it was said with."""
    if kind == "safety-override":
        review = first_code(provision.get("code"), {codes.REVIEW_SYSTEM})
        return review, review
    source_code = first_code(provision.get("code"), codes.CODE_SYSTEMS)
    if source_code in codes.DISSENT_CODES:
        return "object", source_code
    if source_code in codes.CONSENT_CODES:
        return "share", source_code
    return {"permit": "share", "deny": "object"}.get(provision.get("type")), source_code


def first_code(concepts: Any, systems: set[str] | frozenset[str]) -> str | None:
    """The first code from one of `systems` in a list of CodeableConcepts."""
    for concept in concepts or []:
        for coding in (concept or {}).get("coding") or []:
            if coding.get("system") in systems and coding.get("code"):
                return coding["code"]
    return None


def _restrictions(nested: list[dict[str, Any]]) -> tuple[tuple[Restriction, ...], tuple[Restriction, ...],
                                                          str | None]:
    withheld: list[Restriction] = []
    denied: list[Restriction] = []
    opt_out = None
    for index, provision in enumerate(nested):
        if provision.get("type") != "deny":
            continue
        where = f"{BASE}.provision[{index}]"
        withheld += [Restriction(label["code"], where) for label in provision.get("securityLabel") or []
                     if label.get("system") == ACT_CODE_SYSTEM and label.get("code")]
        denied += [Restriction(ods, where) for ods in actor_ods_codes(provision)]
        purposes = {p.get("code") for p in provision.get("purpose") or [] if p.get("system") == ACT_REASON_SYSTEM}
        if purposes & codes.SECONDARY_USE and opt_out is None:
            opt_out = where
    return tuple(withheld), tuple(denied), opt_out


def actor_ods_codes(provision: dict[str, Any]) -> list[str]:
    """ODS codes of the organisations named as actors of a provision, normalised (a source may send "rh8")."""
    found = []
    for actor in provision.get("actor") or []:
        identifier = ((actor or {}).get("reference") or {}).get("identifier") or {}
        value = identifier.get("value")
        if canonical_system(identifier.get("system")) == ODS_ORG_SYSTEM and isinstance(value, str) and value.strip():
            found.append(ods_code(value))
    return found
