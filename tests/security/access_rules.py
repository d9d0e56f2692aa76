"""The documented answer for every kind of caller on every endpoint of every service (docs/SECURITY.md
"Access matrix"; docs/CONTRACTS.md §4 is the source). A route missing here fails the suite: a new endpoint needs
its rule before it can ship."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support import data
from tests.support.tokens import TokenFactory

# Callers that are not authenticated at all: every protected endpoint answers 401.
UNAUTHENTICATED = ("none", "garbage", "expired", "wrong_issuer", "wrong_audience", "wrong_key", "alg_none")
# Authenticated callers: each is refused (403) wherever its rule does not admit it.
AUTHENTICATED = ("clinician", "social_worker", "admin_clerk", "gp_consent_recorder", "privacy_officer", "citizen",
                 "citizen_p5", "citizen_other", "feed", "feed_admin", "system_reader")
CALLERS = UNAUTHENTICATED + AUTHENTICATED
# An admitted caller on a route whose answer depends on the request (async export jobs): anything but 401/403/5xx.
ADMITTED = frozenset(range(200, 500)) - {401, 403}
CLINICAL_USERS = ("clinician", "social_worker", "admin_clerk", "gp_consent_recorder", "privacy_officer")
CITIZENS = ("citizen", "citizen_p5", "citizen_other")


def token_for(tokens: TokenFactory, caller: str, feed_ods: str) -> str | None:
    """The bearer token a caller presents (None: no Authorization header)."""
    match caller:
        case "none":
            return None
        case "garbage":
            return "not-a-jwt"
        case "expired" | "wrong_issuer" | "wrong_audience" | "wrong_key" | "alg_none":
            return getattr(tokens, caller)()
        case "clinician":
            return tokens.clinician(ods=data.ACUTE_ODS, role="S8000:G8000:R8000")
        case "social_worker":
            return tokens.clinician(ods=data.SOCIAL_CARE_ODS, role="S8000:G8000:R8014", sub="555000000014")
        case "admin_clerk":
            return tokens.clinician(ods=data.ACUTE_ODS, role="S8000:G8000:R8009", sub="555000000019")
        case "gp_consent_recorder":
            return tokens.clinician(ods=data.GP_ODS, role="S8000:G8000:R0260", scope="user/Consent.cruds",
                                    sub="555000000077")
        case "privacy_officer":
            return tokens.clinician(ods=data.ACUTE_ODS, role="S8002:G8003:R5100", scope="user/AuditEvent.rs",
                                    sub="555000000009")
        case "citizen":
            return tokens.citizen(data.NHS_NUMBERS[0])
        case "citizen_p5":
            return tokens.citizen(data.NHS_NUMBERS[0], level="P5")
        case "citizen_other":
            return tokens.citizen(data.NHS_NUMBERS[1])
        case "feed":
            return tokens.feed(ods=feed_ods)
        case "feed_admin":
            return tokens.feed(scope="system/IngestAdmin.*")
        case "system_reader":
            return tokens.system()
    raise KeyError(caller)


@dataclass(frozen=True)
class Rule:
    """Who an endpoint admits and what each admitted caller is answered; everyone else authenticated gets 403."""

    admits: dict[str, frozenset[int]] = field(default_factory=dict)
    public: bool = False
    # The request an admitted caller makes: path (with ids filled), and json/content/params/headers.
    request: Callable[[Any], dict[str, Any]] = lambda _p: {}
    feed_ods: str = data.GP_ODS

    def expected(self, caller: str) -> frozenset[int]:
        if self.public:
            return frozenset({200})
        if caller in UNAUTHENTICATED:
            return frozenset({401})
        return self.admits.get(caller, frozenset({403}))


def ok(*statuses: int) -> frozenset[int]:
    return frozenset(statuses or (200,))


def admit(callers: tuple[str, ...] | list[str], statuses: frozenset[int] = ok()) -> dict[str, frozenset[int]]:
    return dict.fromkeys(callers, statuses)


PUBLIC = Rule(public=True)
READERS = ("clinician", "social_worker", "admin_clerk")
EVERY_TOKEN_BUT_CITIZENS = (*CLINICAL_USERS, "feed", "feed_admin", "system_reader")
UNKNOWN = "00000000-0000-4000-8000-000000000000"


SYSTEMS = ("feed", "feed_admin", "system_reader")


def _export(path: str) -> Callable[[Any], dict[str, Any]]:
    return lambda _p: {"path": path, "headers": {"Prefer": "respond-async"}, "params": {"_type": "Patient"}}


def _decide_body(_p: Any) -> dict[str, Any]:
    return {"json": {"patient": {"nhs_number": data.NHS_NUMBERS[0], "person_id": "p-1"},
                     "actor": {"kind": "clinician", "ods_code": "RR8", "role_code": "R8000", "user_id": "555000000001"},
                     "purpose": "TREAT", "labels": [], "legitimate_relationship": "registered",
                     "break_glass_reason": None}}


def _preferences(_p: Any) -> dict[str, Any]:
    return {"json": {"direct_care": "share", "withheld_categories": [], "denied_organisations": [],
                     "national_data_opt_out": False}}


def _professional_consent(_p: Any) -> dict[str, Any]:
    from tests.unit.consent.builders import professional_body

    body = professional_body("permit", code="425691002")
    body["patient"]["identifier"]["value"] = data.NHS_NUMBERS[0]
    return {"json": body}


def _messages(kind: str) -> Callable[[Any], dict[str, Any]]:
    from tests.fixtures.ingest import messages

    def build(_p: Any) -> dict[str, Any]:
        if kind == "fhir":
            return {"json": messages.load_json("gp_record_bundle.json")}
        if kind == "hl7v2":
            return {"content": messages.adt("A01", control="MATRIX-1").encode()}
        if kind == "community":
            return {"content": messages.text("community_contacts.csv").encode()}
        return {"json": messages.event("contact.recorded", {"contact": {"id": "CON-M", "relationship": "son"}})}

    return build


RULES: dict[str, dict[tuple[str, str], Rule]] = {
    "ingest": {
        ("GET", "/healthz"): PUBLIC, ("GET", "/readyz"): PUBLIC, ("GET", "/metrics"): PUBLIC,
        ("POST", "/ingest/fhir"): Rule(admit(["feed"]), request=_messages("fhir"), feed_ods=data.GP_ODS),
        ("POST", "/ingest/hl7v2"): Rule(admit(["feed"]), request=_messages("hl7v2"), feed_ods=data.ACUTE_ODS),
        ("POST", "/ingest/community"): Rule(admit(["feed"]), request=_messages("community"),
                                            feed_ods=data.COMMUNITY_ODS),
        ("POST", "/ingest/socialcare"): Rule(admit(["feed"]), request=_messages("socialcare"),
                                             feed_ods=data.SOCIAL_CARE_ODS),
        ("GET", "/ingest/socialcare/schema"): Rule(admit(EVERY_TOKEN_BUT_CITIZENS)),
        ("GET", "/ingest/raw"): Rule(admit(["feed_admin"])),
        ("POST", "/ingest/raw/{raw_id}/retry"): Rule(admit(["feed_admin"], ok(404)),
                                                    request=lambda _p: {"path": f"/ingest/raw/{UNKNOWN}/retry"}),
        ("GET", "/ingest/reviews"): Rule(admit(["feed_admin"])),
        ("POST", "/ingest/reviews/{review_id}"): Rule(
            admit(["feed_admin"], ok(404)),
            request=lambda _p: {"path": f"/ingest/reviews/{UNKNOWN}",
                                "json": {"decision": "reject", "reviewer": "555000000042"}}),
        ("POST", "/ingest/merges/{merge_id}/undo"): Rule(admit(["feed_admin"], ok(404)),
                                                        request=lambda _p: {"path": f"/ingest/merges/{UNKNOWN}/undo"}),
    },
    "consent": {
        ("GET", "/healthz"): PUBLIC, ("GET", "/readyz"): PUBLIC, ("GET", "/metrics"): PUBLIC,
        ("GET", "/"): PUBLIC,
        ("GET", "/static/{name}"): Rule(public=True, request=lambda _p: {"path": "/static/app.js"}),
        ("GET", "/consent/me"): Rule(admit(CITIZENS)),
        ("PUT", "/consent/me"): Rule({"citizen": ok(200, 201), "citizen_other": ok(200, 201)},
                                     request=_preferences),  # citizen_p5: 403, changing choices needs P9
        ("GET", "/consent/me/history"): Rule(admit(CITIZENS)),
        ("GET", "/consent/me/access-log"): Rule(admit(CITIZENS)),
        ("GET", "/consent/me/summary"): Rule(admit(CITIZENS)),
        ("POST", "/consent/decide"): Rule(admit(["system_reader"]), request=_decide_body),
        ("POST", "/fhir/Consent"): Rule({"gp_consent_recorder": ok(201)}, request=_professional_consent),
        ("GET", "/fhir/Consent/{consent_id}"): Rule(
            admit(("clinician", "social_worker", "admin_clerk", "gp_consent_recorder"), ok(404)),
            request=lambda _p: {"path": f"/fhir/Consent/{UNKNOWN}"}),
        ("GET", "/fhir/Consent"): Rule(
            admit(("clinician", "social_worker", "admin_clerk", "gp_consent_recorder")),
            request=lambda _p: {"params": {"patient:identifier":
                                           f"https://fhir.nhs.uk/Id/nhs-number|{data.NHS_NUMBERS[0]}"}}),
        ("GET", "/consent/secondary-use/excluded"): Rule(admit(["system_reader"], ADMITTED)),
    },
    "record_api": {
        ("GET", "/healthz"): PUBLIC, ("GET", "/readyz"): PUBLIC, ("GET", "/metrics"): PUBLIC,
        ("GET", "/fhir/metadata"): PUBLIC,
        ("GET", "/fhir/AuditEvent"): Rule(admit(["privacy_officer"])),
        ("GET", "/fhir/Patient/{id}/$everything"): Rule(
            admit(READERS), request=lambda p: {"path": f"/fhir/Patient/{p.scenario.person}/$everything"}),
        ("GET", "/fhir/{resource_type}"): Rule(
            admit(READERS), request=lambda p: {"path": "/fhir/Encounter", "params": {"patient": p.scenario.person}}),
        ("GET", "/fhir/{resource_type}/_history"): Rule(
            admit(READERS), request=lambda p: {"path": "/fhir/Encounter/_history",
                                               "params": {"patient": p.scenario.person}}),
        ("GET", "/fhir/{resource_type}/{id}"): Rule(
            admit(READERS), request=lambda p: {"path": f"/fhir/Encounter/{p.scenario.ids['admission']}"}),
        ("GET", "/fhir/{resource_type}/{id}/_history"): Rule(
            admit(READERS), request=lambda p: {"path": f"/fhir/Encounter/{p.scenario.ids['admission']}/_history"}),
        ("GET", "/fhir/{resource_type}/{id}/_history/{version}"): Rule(
            admit(READERS), request=lambda p: {"path": f"/fhir/Encounter/{p.scenario.ids['admission']}/_history/1"}),
        # Population health (secondary use): system clients only, never clinicians or citizens; a system token
        # without read scopes is refused the export itself, and no client sees another client's export job.
        ("GET", "/fhir/$export"): Rule(admit(["system_reader"], ok(202)), request=_export("/fhir/$export")),
        ("GET", "/fhir/Patient/$export"): Rule(admit(["system_reader"], ok(202)),
                                               request=_export("/fhir/Patient/$export")),
        ("GET", "/fhir/Group/{group_id}/$export"): Rule(
            admit(["system_reader"], ok(202)), request=_export(f"/fhir/Group/practice-{data.GP_ODS}/$export")),
        ("GET", "/fhir/$export-status/{job_id}"): Rule(admit(SYSTEMS, ok(404)),
                                                      request=lambda _p: {"path": f"/fhir/$export-status/{UNKNOWN}"}),
        ("DELETE", "/fhir/$export-status/{job_id}"): Rule(
            admit(SYSTEMS, ok(404)), request=lambda _p: {"path": f"/fhir/$export-status/{UNKNOWN}"}),
        ("GET", "/fhir/$export-file/{job_id}/{file_name}"): Rule(
            admit(SYSTEMS, ok(404)), request=lambda _p: {"path": f"/fhir/$export-file/{UNKNOWN}/Patient.ndjson"}),
        ("GET", "/population/aggregates"): Rule(admit(["system_reader"])),
        ("GET", "/population/aggregates.html"): Rule(admit(["system_reader"])),
    },
}
