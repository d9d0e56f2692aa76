"""The CapabilityStatement at /fhir/metadata, generated from the same tables the searches run on
(`shared.search.SEARCH_PARAMS` via `query.param_defs`, the include tables, the audit search parameters) so it
cannot promise what the API does not do."""

from __future__ import annotations

from typing import Any

from services.record_api.audit_search import AUDIT_PARAMS
from services.record_api.enforcement import BREAK_GLASS_HEADER
from services.record_api.query import (
    PATIENT_SORTABLE,
    SORTABLE,
    SUMMARY_VALUES,
    include_targets,
    param_defs,
    revinclude_targets,
)
from services.record_api.resource_types import DIRECTORY_TYPES, searchable_types
from services.record_api.settings import RecordApiSettings

_FHIR_TYPES = {"string": "string", "token": "token", "date": "date", "reference": "reference"}


def capability_statement(settings: RecordApiSettings, base_url: str) -> dict[str, Any]:
    resources = [_searchable(t, settings) for t in searchable_types()]
    resources += [_read_only(t) for t in sorted(DIRECTORY_TYPES)]
    resources.append(_audit_event())
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "kind": "instance",
        "software": {"name": "Shared care record: record API", "version": "0.1.0"},
        "implementation": {"description": "Shared care record of an English ICS: one consent-enforced, audited "
                                          "FHIR R4 view per person", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": (
                "Read-only: records arrive through ingest. Every read is consent-enforced and audited. "
                f"Break-glass: send {BREAK_GLASS_HEADER}: <reason> (clinical roles only; always audited). "
                f"Paging: _count (default {settings.default_page_size}, at most {settings.max_page_size}); follow "
                "next/previous links (an opaque _cursor). Unknown parameters are ignored and reported unless "
                "Prefer: handling=strict is sent, when they are refused with 400. JSON only: a request that "
                "accepts no JSON (_format=xml, Accept: application/fhir+xml) gets 406. HEAD is answered as GET."),
            "security": {"service": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
                "description": "Bearer JWT (CIS2-style clinician token) with SMART user/ scopes per type: "
                               "r for read, vread and history, s for search."},
            "resource": resources,
            "operation": [_EXPORT | {"definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}],
        }],
    }


# FHIR Bulk Data for secondary use (services/record_api/population, docs/POPULATION.md).
_EXPORT = {"name": "export", "documentation": (
    "Bulk Data kick-off (Prefer: respond-async; _type, _since, _purpose HOPERAT|HRESCH) for system tokens only; "
    "people with the National Data Opt-out or an objection are excluded, sensitive items removed, identifiers "
    "pseudonymised per recipient. Group level: Group/practice-<ODS>/$export.")}


def _search_param(definition: Any) -> dict[str, Any]:
    item = {"name": definition.name, "type": _FHIR_TYPES[definition.kind]}
    notes = [definition.documentation] if definition.documentation else []
    if definition.implied_system:  # a client cannot otherwise know `system|code` is matched on the code alone
        notes.append(f"a code: matches code, |code or {definition.implied_system}|code; another system matches "
                     "nothing")
    if notes:
        item["documentation"] = "; ".join(notes)
    return item


def _searchable(resource_type: str, settings: RecordApiSettings) -> dict[str, Any]:
    interactions = ["read", "vread", "history-instance", "history-type", "search-type"]
    documentation = ("Searches and type history must name one patient (patient= or subject=): the record is "
                     "consent-enforced per person." if resource_type != "Patient" else
                     "One Patient per person: merged demographics, every linked identifier, Patient.link to each "
                     "source record (also readable). Search matches any source's identifiers and demographics. "
                     "type history needs patient=.")
    resource: dict[str, Any] = {
        "type": resource_type,
        "documentation": documentation,
        "interaction": [{"code": code} for code in interactions],
        "versioning": "versioned",
        "readHistory": True,
        "conditionalRead": "full-support",
        "searchParam": [_search_param(d) for d in param_defs(resource_type).values()],
        "searchInclude": include_targets(resource_type),
        "searchRevInclude": revinclude_targets(resource_type),
        "extension": [_result_params_extension(resource_type)],
    }
    if resource_type == "Patient":
        resource["operation"] = [{"name": "everything",
                                  "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                                  "documentation": "_since, _type, _count; clinically duplicate entries across "
                                                   "sources are shown once with every source attached"},
                                 _EXPORT | {"definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
                                                          "patient-export"}]
    return resource


def _read_only(resource_type: str) -> dict[str, Any]:
    return {"type": resource_type, "documentation": "Directory data (no patient data): read only.",
            "interaction": [{"code": c} for c in ("read", "vread", "history-instance")],
            "versioning": "versioned", "readHistory": True, "conditionalRead": "full-support"}


def _audit_event() -> dict[str, Any]:
    return {"type": "AuditEvent",
            "documentation": "Privacy officers (RBAC R5100) with user/AuditEvent.s search the access trail.",
            "interaction": [{"code": "search-type"}],
            "searchParam": [{"name": name, "type": kind, "documentation": doc} for name, (kind, doc)
                            in AUDIT_PARAMS.items()]}


def _result_params_extension(resource_type: str) -> dict[str, Any]:
    """Result parameters are not search parameters in FHIR R4's CapabilityStatement; said here, in words."""
    keys = PATIENT_SORTABLE if resource_type == "Patient" else SORTABLE
    sort = f"{', '.join(keys)}, '-' for descending"
    return {"url": "urn:scr:fhir:StructureDefinition:result-parameters",
            "valueString": f"_count, _sort ({sort}), _include, _revinclude, "
                           f"_summary ({', '.join(SUMMARY_VALUES)}), _elements, _total, _format=json"}
