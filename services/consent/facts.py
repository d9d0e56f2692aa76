"""What a stored FHIR Consent says, reduced to the facts the rules engine reasons about.

Parsing happens once, when a person's consents are loaded into the cache, so a decision never walks FHIR JSON.
Every fact keeps the FHIRPath-style location of the provision it came from, so a decision can name it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from services.consent import codes
from shared.fhir import ACT_CODE_SYSTEM, ACT_REASON_SYSTEM, ODS_ORG_SYSTEM, canonical_system

BASE = "Consent.provision"


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
    recorded_at: datetime
    stated_at: datetime  # when its statement took effect: provision.period.start, else dateTime, else recorded
    ends_at: datetime | None  # provision.period.end: expired afterwards
    stance: str | None  # share | object | upheld | declined (None: says nothing about direct care)
    stance_code: str | None  # the source code behind the stance (e.g. SNOMED 416409005), for the reason
    withheld: tuple[Restriction, ...] = ()
    denied_organisations: tuple[Restriction, ...] = ()
    secondary_use_opt_out: str | None = None  # the provision recording the National Data Opt-out

    def in_force(self, now: datetime) -> bool:
        """Active, started, and not expired."""
        return (self.status == "active" and self.stated_at <= now
                and (self.ends_at is None or self.ends_at > now))


def utc(moment: datetime) -> datetime:
    """An aware datetime: SQLite hands back naive ones, which are UTC here."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_datetime(value: Any) -> datetime | None:
    """A FHIR date or dateTime as an aware datetime (dates at midnight UTC, naive times as UTC), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def facts_from(*, id: str, version_id: int, kind: str, status: str, author_kind: str, author_ods: str | None,
               author_role: str | None, recorded_at: datetime, body: dict[str, Any]) -> ConsentFacts:
    """The facts of one stored Consent; `body` has already passed validation when it was recorded."""
    provision = body.get("provision") or {}
    period = provision.get("period") or {}
    recorded = utc(recorded_at)
    stated = parse_datetime(period.get("start")) or parse_datetime(body.get("dateTime")) or recorded
    stance, stance_code = stance_of(kind, provision)
    withheld, denied, opt_out = _restrictions(provision.get("provision") or [])
    return ConsentFacts(
        id=id, version_id=version_id, kind=kind, status=status, author_kind=author_kind, author_ods=author_ods,
        author_role=author_role, recorded_at=recorded, stated_at=stated, ends_at=parse_datetime(period.get("end")),
        stance=stance, stance_code=stance_code, withheld=withheld, denied_organisations=denied,
        secondary_use_opt_out=opt_out,
    )


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
    """ODS codes of the organisations named as actors of a provision."""
    found = []
    for actor in provision.get("actor") or []:
        identifier = ((actor or {}).get("reference") or {}).get("identifier") or {}
        if canonical_system(identifier.get("system")) == ODS_ORG_SYSTEM and identifier.get("value"):
            found.append(identifier["value"])
    return found
