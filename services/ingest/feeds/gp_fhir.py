"""GP and community FHIR: batch, transaction and collection Bundles of UK Core resources.

Each entry is checked (R4 structure, required value sets, NHS number check digits, supported type, a patient
reference that resolves in the Bundle or names a stored Patient) and mapped as it is, with its references
rewritten to local references the pipeline resolves after identity matching.
"""

from __future__ import annotations

import re
from typing import Any

from services.ingest.feeds.model import (
    AdapterError,
    Mapped,
    MappedMessage,
    Rejected,
    parse_instant,
    references_in,
    refuse_dependents,
    rewrite_references,
)
from shared import nhs_number
from shared.fhir import NHS_NUMBER_SYSTEM, Issue, canonical_system, validate_resource

# Clinical types and the element holding their patient reference.
PATIENT_ELEMENT: dict[str, str] = {
    "Encounter": "subject", "Condition": "subject", "Observation": "subject", "MedicationStatement": "subject",
    "MedicationRequest": "subject", "Procedure": "subject", "CarePlan": "subject", "Flag": "subject",
    "DocumentReference": "subject", "ServiceRequest": "subject", "DiagnosticReport": "subject",
    "AllergyIntolerance": "patient", "Immunization": "patient", "EpisodeOfCare": "patient",
    "Consent": "patient", "RelatedPerson": "patient",
}
# Resources about no one patient, stored so references to them resolve.
SHARED_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole", "Location", "Medication"})
BUNDLE_TYPES = frozenset({"batch", "transaction", "collection"})
_STORED_PATIENT = re.compile(r"^Patient/[A-Za-z0-9\-.]{1,64}$")
_KEPT_META = ("profile", "security")
# The platform's own local references (`urn:scr:entry:N`, `urn:scr:hl7:...`): a sender may not use them.
_RESERVED_REFERENCES = "urn:scr:"


def map_bundle(bundle: Any, *, max_entries: int) -> MappedMessage:
    """Map a Bundle. Raises AdapterError when the Bundle itself is unusable, or when any entry of a
    transaction is (all or nothing); a batch or collection keeps its good entries and lists the bad."""
    entries = _entries(bundle, max_entries)
    default_updated = parse_instant((bundle.get("meta") or {}).get("lastUpdated")) or \
        parse_instant(bundle.get("timestamp"))
    index = _reference_index(entries)
    local_refs = {ref: _local_ref(position) for ref, position in index.items()}
    message = MappedMessage(atomic=bundle["type"] == "transaction")
    bad: dict[int, list[Issue]] = {}
    for position, entry in enumerate(entries):
        where = f"Bundle.entry[{position}]"
        issues = _entry_issues(entry, bundle["type"], where)
        if issues:
            bad[position] = issues
            continue
        item, issues = _map_entry(entry, position, where, (index, local_refs), entries, default_updated)
        if issues:
            bad[position] = issues
        else:
            message.items.append(item)
    if bad and bundle["type"] == "transaction":
        raise AdapterError([i for position in sorted(bad) for i in bad[position]])
    message.rejected = [Rejected(f"Bundle.entry[{p}]", issues, p) for p, issues in bad.items()]
    refuse_dependents(message, {_local_ref(p): f"Bundle.entry[{p}]" for p in bad})
    message.rejected.sort(key=lambda rejected: rejected.index or 0)
    return message


def _entries(bundle: Any, max_entries: int) -> list[Any]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise AdapterError(Issue("the body must be a FHIR Bundle", "Bundle.resourceType", code="structure"))
    if not isinstance(bundle.get("type"), str) or bundle["type"] not in BUNDLE_TYPES:
        raise AdapterError(Issue(f"Bundle.type {bundle.get('type')!r} is not accepted; send "
                                 f"{', '.join(sorted(BUNDLE_TYPES))}", "Bundle.type", code="not-supported"))
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        raise AdapterError(Issue("the Bundle has no entries", "Bundle.entry", code="required"))
    if len(entries) > max_entries:
        raise AdapterError(Issue(f"the Bundle has {len(entries)} entries; at most {max_entries} are accepted",
                                 "Bundle.entry", code="too-costly"))
    return entries


def _reference_index(entries: list[Any]) -> dict[str, int]:
    """Every way an entry may be referred to within the Bundle: its fullUrl and its Type/id."""
    index: dict[str, int] = {}
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and full_url:
            index[full_url] = position
            if not full_url.startswith("urn:") and "/" in full_url:
                index["/".join(full_url.rstrip("/").split("/")[-2:])] = position
        if isinstance(resource, dict) and isinstance(resource.get("id"), str):
            index[f"{resource.get('resourceType')}/{resource['id']}"] = position
    return index


def _entry_issues(entry: Any, bundle_type: str, where: str) -> list[Issue]:
    if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
        return [Issue("each entry must hold a resource", f"{where}.resource", code="required")]
    resource = entry["resource"]
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or (resource_type != "Patient" and resource_type not in PATIENT_ELEMENT
                                              and resource_type not in SHARED_TYPES):
        return [Issue(f"resourceType {resource_type!r} is not accepted by this feed",
                      f"{where}.resource.resourceType", code="not-supported")]
    request = entry.get("request")
    if bundle_type != "collection" and isinstance(request, dict) and request.get("method") not in ("POST", "PUT"):
        return [Issue(f"request.method {request.get('method')!r} is not accepted; send POST or PUT",
                      f"{where}.request.method", code="not-supported")]
    if (path := _oversized_string(resource)) is not None:
        return [Issue(f"a string over FHIR's limit of {MAX_STRING} characters", f"{where}.resource{path}",
                      code="too-long")]
    return validate_resource(resource, where=f"{where}.resource")


MAX_STRING = 1024 * 1024  # FHIR R4 datatypes: "strings SHALL NOT exceed 1MB"


def _oversized_string(node: Any, path: str = "") -> str | None:
    """Where the first string longer than FHIR allows is, or None."""
    if isinstance(node, str):
        return path if len(node) > MAX_STRING else None
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        where = f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]"
        if (found := _oversized_string(value, where)) is not None:
            return found
    return None


def _map_entry(entry: dict[str, Any], position: int, where: str, refs: tuple[dict[str, int], dict[str, str]],
               entries: list[Any], default_updated: Any) -> tuple[Mapped | None, list[Issue]]:
    index, local_refs = refs  # each way to refer to an entry: its position, and its local `urn:scr:entry:N` ref
    resource = entry["resource"]
    resource_type = resource["resourceType"]
    if reserved := next((r for r in references_in(resource) if r.startswith(_RESERVED_REFERENCES)), None):
        return None, [Issue(f"reference {reserved!r}: the {_RESERVED_REFERENCES} namespace is reserved for "
                            "the platform's own references", f"{where}.resource", code="invalid")]
    body = rewrite_references(_tidied(_without_server_fields(resource)), local_refs)
    if dangling := next((r for r in references_in(body) if r.startswith("urn:uuid:")), None):
        return None, [Issue(f"reference {dangling!r} resolves to no entry of the Bundle", f"{where}.resource",
                            code="not-found")]
    patient_ref = None
    if resource_type in PATIENT_ELEMENT:
        patient_ref, issue = _patient_reference(body, resource_type, where, index, entries)
        if issue:
            return None, [issue]
    item = Mapped(
        resource=body,
        source_key=_source_key(resource),
        source_updated=parse_instant((resource.get("meta") or {}).get("lastUpdated")) or default_updated,
        refs=(_local_ref(position),),
        patient_ref=patient_ref,
        where=where,
        entry=position,
    )
    return item, []


def _local_ref(position: int) -> str:
    return f"urn:scr:entry:{position}"


def _without_server_fields(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without the sender's server-side fields (id, versionId, lastUpdated); profile and
    security labels stay, as the sender's statement about the resource."""
    body = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k in _KEPT_META}
    if meta:
        body["meta"] = meta
    return body


def _tidied(body: dict[str, Any]) -> dict[str, Any]:
    """NHS numbers stored as UK Core has them, whatever the sender typed: ten digits (no spaces or dashes)
    under the current system URI (not a legacy one), so every feed's copy of a number reads the same."""
    identifiers = body.get("identifier")
    if body.get("resourceType") != "Patient" or not isinstance(identifiers, list):
        return body
    return {**body, "identifier": [_tidied_nhs_number(i) for i in identifiers]}


def _tidied_nhs_number(identifier: Any) -> Any:
    if not isinstance(identifier, dict) or canonical_system(identifier.get("system")) != NHS_NUMBER_SYSTEM \
            or not isinstance(identifier.get("value"), str):
        return identifier
    return {**identifier, "system": NHS_NUMBER_SYSTEM, "value": nhs_number.normalise(identifier["value"])}


def _patient_reference(body: dict[str, Any], resource_type: str, where: str, index: dict[str, int],
                       entries: list[Any]) -> tuple[str | None, Issue | None]:
    element = PATIENT_ELEMENT[resource_type]
    path = f"{where}.resource.{element}.reference"
    reference = (body.get(element) or {}).get("reference") if isinstance(body.get(element), dict) else None
    if not isinstance(reference, str) or not reference:
        return None, Issue(f"{resource_type}.{element} must reference the Patient", path, code="required")
    if reference.startswith("urn:scr:entry:"):
        entry = entries[int(reference.rsplit(":", 1)[1])]
        target = entry.get("resource") if isinstance(entry, dict) else None
        target_type = target.get("resourceType") if isinstance(target, dict) else None
        if target_type != "Patient":
            return None, Issue(f"{element} references a {target_type or 'bad entry'}, not a Patient", path,
                               code="invalid")
        return reference, None
    if _STORED_PATIENT.match(reference):
        return reference, None  # a stored record: the pipeline checks it exists
    return None, Issue(f"{element} reference {reference!r} resolves neither within the Bundle nor to a stored "
                           "Patient", path, code="not-found")


def _source_key(resource: dict[str, Any]) -> str:
    """The sender's own identity for the record: a local identifier, else the NHS number (Patients), else
    the sender's resource id; an empty string asks the pipeline to key it by content."""
    identifiers = [i for i in resource.get("identifier") or [] if isinstance(i, dict)
                   and isinstance(i.get("value"), str) and i.get("system")]
    local = [i for i in identifiers if canonical_system(i["system"]) != NHS_NUMBER_SYSTEM]
    chosen = (local or identifiers)[:1]
    if chosen:
        return f"{canonical_system(chosen[0]['system'])}|{chosen[0]['value']}"
    if isinstance(resource.get("id"), str):
        return f"id:{resource['id']}"
    return ""
