"""What leaves for secondary use, and in what form (docs/POPULATION.md, "What is excluded and removed").

* Items with a sensitive label are not exported at all: every sensitivity category but `SOC` (which marks where
  a record came from, social care, not what it says), the source's `V`, and the categories a person withheld.
* Direct identifiers are removed: NHS number and every local identifier, names, telecom, addresses, contacts,
  photos, narrative text, notes and other free text, attached documents, contained resources, and the display
  text of patient references. DocumentReference (documents are free text) is not exported at all.
* The person's Patient keeps what planning needs: sex, year of birth, ethnic category, postcode district, LSOA
  and deprivation decile, registered GP practice. S-flagged persons keep no location data at all.
* Every id of patient data, and every reference to it, becomes a keyed-hash pseudonym for the recipient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.record_api.enforcement import LOCATION_ELEMENTS
from services.record_api.population.demographics import PersonRow
from services.record_api.population.deprivation import DeprivationLookup
from services.record_api.population.pseudonym import Pseudonymiser
from services.record_api.population.sensitivity import EXCLUDED_LABELS, SOCIAL_CARE, is_excluded
from services.record_api.resource_types import DIRECTORY_TYPES
from shared import nhs_number
from shared.fhir import ETHNIC_CATEGORY_ENGLAND, ETHNIC_CATEGORY_EXT, ODS_ORG_SYSTEM

# Dropped wherever they appear, whatever they hold: identifiers, names, contact details, narrative, annotations
# (Annotation: `note`, CarePlan.activity.`progress`), contained resources and attached documents.
DIRECT_IDENTIFIERS = frozenset({"identifier", "text", "contained", "note", "progress", "name", "telecom", "address",
                                "contact", "photo", "presentedForm", "attachment", "content", "valueAttachment",
                                "contentAttachment"})
# A string leaves only when it is coded: these elements (FHIR `code`, `uri` and coding elements of the exported
# types), a date or time (by its shape), a reference (rewritten below), an extension's url, or a Coding's display.
# Every other string is free text (description, conclusion, patientInstruction, CodeableConcept.text, valueString,
# authorString, lotNumber, ...) and is dropped: an allow-list, so free text in an element nobody thought of is
# dropped too.
CODED_STRINGS = frozenset({"resourceType", "system", "code", "version", "unit", "status", "intent", "priority", "use",
                           "gender", "kind", "mode", "criticality", "severity", "category", "type", "language",
                           "comparator", "valueCode", "lifecycleStatus", "required", "when", "dayOfWeek",
                           "periodUnit", "durationUnit"})
# A date of birth identifies a person (the patient, or a RelatedPerson): only the year leaves.
BIRTH_DATES = frozenset({"birthDate"})
EXTENSION_KEYS = ("extension", "modifierExtension")
REFERENCE_KEYS = frozenset({"reference", "type", "identifier", "display", "extension", "id"})
FHIR_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$")
FHIR_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?$")
NHS_NUMBER_SHAPED = re.compile(r"(?<!\d)\d{3}[ -]?\d{3}[ -]?\d{4}(?!\d)")
# Location-revealing elements removed for S-flagged persons (beyond those the record API redacts).
RESTRICTED_ELEMENTS: dict[str, tuple[str, ...]] = {
    **LOCATION_ELEMENTS, "Encounter": ("location", "hospitalization", "serviceProvider"),
    "EpisodeOfCare": ("managingOrganization",), "ServiceRequest": ("locationReference", "locationCode"),
}
PLACES = frozenset({"Organization", "Location", "HealthcareService"})
PSEUDED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "PSEUDED",
           "display": "pseudonymized"}
LSOA_EXT = "urn:scr:fhir:StructureDefinition:lsoa"
IMD_DECILE_EXT = "urn:scr:fhir:StructureDefinition:imd-decile"
__all__ = ["EXCLUDED_LABELS", "SOCIAL_CARE", "Deidentifier", "Targets", "is_excluded", "nhs_number_residue",
           "person_pseudonym", "postcode_district", "recipient_of", "resource_pseudonym"]


def recipient_of(subject: str, ods_code: str | None) -> str:
    """The export recipient a pseudonym key is derived for: the system token's organisation and subject."""
    return f"{ods_code or '-'}/{subject}"


def person_pseudonym(pseudonymiser: Pseudonymiser, person_id: str, nhs_number: str | None) -> str:
    """A person's pseudonym: from the NHS number when the person has one (stable across merges and re-linking),
    otherwise from the person id."""
    return pseudonymiser.pseudonym(f"nhs:{nhs_number}" if nhs_number else f"person:{person_id}")


def resource_pseudonym(pseudonymiser: Pseudonymiser, resource_type: str, resource_id: str) -> str:
    return pseudonymiser.pseudonym(f"{resource_type}/{resource_id}")


def postcode_district(postcode: str | None) -> str | None:
    """The outward code ("LS1" of "LS1 4AP"): the coarsest place a postcode gives."""
    compact = "".join((postcode or "").split()).upper()
    return compact[:-3] if len(compact) >= 5 else None


class Targets(Protocol):
    """What a job knows about the targets of references, so that nothing points at what was left out."""

    def person(self, person_id: str) -> tuple[str, str | None] | None:
        """The person a `Patient/<id>` reference means, after merges: (person id, NHS number); None when that
        person is refused secondary use, or is not a known person."""

    def item_excluded(self, resource_type: str, resource_id: str) -> bool:
        """Whether the referenced item stays out (a sensitive label, a withheld category, a refused person)."""


class EveryoneIncluded:
    """Targets when nothing is known to be excluded (tests; a reference to another person links by person id)."""

    def person(self, person_id: str) -> tuple[str, str | None] | None:
        return person_id, None

    def item_excluded(self, resource_type: str, resource_id: str) -> bool:
        return False


class Deidentifier:
    """Turns stored bodies into what one recipient may receive."""

    def __init__(self, pseudonymiser: Pseudonymiser, lookup: DeprivationLookup,
                 targets: Targets | None = None) -> None:
        self.pseudonymiser = pseudonymiser
        self.lookup = lookup
        self.targets = targets or EveryoneIncluded()

    def patient(self, row: PersonRow) -> dict[str, Any]:
        patient: dict[str, Any] = {"resourceType": "Patient",
                                   "id": person_pseudonym(self.pseudonymiser, row.person_id, row.nhs_number),
                                   "meta": {"lastUpdated": _instant(row), "security": [PSEUDED]}}
        if row.gender:
            patient["gender"] = row.gender
        if row.birth_date:
            patient["birthDate"] = row.birth_date[:4]  # year of birth only
        if row.deceased:
            patient["deceasedBoolean"] = True
        extensions = []
        if row.ethnic_code:
            extensions.append({"url": ETHNIC_CATEGORY_EXT, "valueCodeableConcept": {"coding": [
                {"system": ETHNIC_CATEGORY_ENGLAND, "code": row.ethnic_code}]}})
        if not row.restricted:
            extensions += self._place(patient, row)
        if extensions:
            patient["extension"] = extensions
        return patient

    def _place(self, patient: dict[str, Any], row: PersonRow) -> list[dict[str, Any]]:
        if district := postcode_district(row.postcode):
            patient["address"] = [{"use": "home", "postalCode": district}]
        if row.gp_practice:
            patient["generalPractitioner"] = [{"identifier": {"system": ODS_ORG_SYSTEM, "value": row.gp_practice}}]
        area = self.lookup.area(row.postcode)
        if area is None:
            return []
        return [{"url": LSOA_EXT, "valueCode": area.lsoa_code},
                {"url": IMD_DECILE_EXT, "valueInteger": area.imd_decile}]

    def resource(self, body: dict[str, Any], *, person_id: str, person_nhs: str | None, restricted: bool,
                 referenced: set[str] | None = None) -> dict[str, Any]:
        """A clinical resource with identifiers and free text removed at every depth, and every patient-data id
        pseudonymised. The other persons it still refers to are added to `referenced`."""
        resource_type = body.get("resourceType", "")
        dropped = set(RESTRICTED_ELEMENTS.get(resource_type, ())) if restricted else set()
        kept = {k: v for k, v in body.items() if k not in dropped and k not in ("id", "meta")}
        out: dict[str, Any] = {"resourceType": resource_type,
                               "id": resource_pseudonym(self.pseudonymiser, resource_type, str(body.get("id"))),
                               "meta": _meta(body, restricted)}
        context = _Context(person_id, person_pseudonym(self.pseudonymiser, person_id, person_nhs), restricted,
                           referenced if referenced is not None else set())
        out.update(self._element(kept, context))
        return out

    def directory(self, body: dict[str, Any]) -> dict[str, Any]:
        """A directory resource (Organization, Location): no patient data; narrative dropped, id kept so that
        references to it still resolve."""
        return {k: v for k, v in body.items() if k not in ("text", "contained")}

    def _value(self, key: str, value: Any, context: _Context, parent: str) -> Any:
        """One element's value, or _DROP. Lists keep their positions (an empty reference stays `{}`)."""
        if isinstance(value, list):
            items = [self._value(key, v, context, parent) for v in value]
            return [v for v in items if v is not _DROP] or _DROP
        if isinstance(value, dict):
            return self._element(value, context, key)
        if isinstance(value, str) and key in BIRTH_DATES:
            return value[:4] if FHIR_DATE.match(value) else _DROP  # whoever was born then: the year only
        if isinstance(value, str):
            return value if _coded_string(key, value, parent) else _DROP
        return value  # numbers and booleans: values, flags, counts

    def _element(self, element: dict[str, Any], context: _Context, parent: str = "") -> dict[str, Any]:
        if _is_reference(element):
            return self._reference(element, context)
        out = {}
        for key, value in element.items():
            if key in DIRECT_IDENTIFIERS:
                continue
            if key == "display":
                if {"system", "code"} & element.keys() and isinstance(value, str):
                    out[key] = value  # a Coding's display is the code's term; any other display is free text
                continue
            kept = self._value(key, value, context, parent)
            if kept is not _DROP:
                out[key] = kept
        return out

    def _reference(self, ref: dict[str, Any], context: _Context) -> dict[str, Any]:
        """A Reference keeps only a target outside readers can resolve: never its display or identifier (which
        may name another person), except an organisation's ODS code."""
        if not isinstance(ref.get("reference"), str):
            return self._organisation_code(ref, context)
        parts = ref["reference"].split("/_history")[0].rstrip("/").split("/")
        if len(parts) < 2 or not parts[-2][:1].isupper():
            return {}  # a contained, urn: or raw-archive reference: nothing outside the export resolves it
        target_type, target_id = parts[-2], parts[-1]
        if target_type == "Patient":
            return self._person_reference(target_id, context)
        if target_type in DIRECTORY_TYPES:
            if context.restricted and target_type in PLACES:
                return {}  # where an S-flagged person was seen is location data
            return {"reference": f"{target_type}/{target_id}"}
        if self.targets.item_excluded(target_type, target_id):
            return {}  # a pointer to an item left out would show that it exists
        return {"reference": f"{target_type}/{resource_pseudonym(self.pseudonymiser, target_type, target_id)}"}

    def _person_reference(self, target_id: str, context: _Context) -> dict[str, Any]:
        """The subject's own pseudonym, or another person's: the same pseudonym as that person's exported Patient,
        so the reference resolves; nothing when that person is refused secondary use."""
        if target_id == context.person_id:
            return {"reference": f"Patient/{context.patient_ref}"}
        target = self.targets.person(target_id)
        if target is None:
            return {}
        context.referenced.add(target[0])
        return {"reference": f"Patient/{person_pseudonym(self.pseudonymiser, *target)}"}

    @staticmethod
    def _organisation_code(ref: dict[str, Any], context: _Context) -> dict[str, Any]:
        """A logical reference: kept only when it is an organisation's ODS code (and the person not S-flagged)."""
        identifier = ref.get("identifier")
        if context.restricted or not isinstance(identifier, dict) or identifier.get("system") != ODS_ORG_SYSTEM:
            return {}
        return {"identifier": {"system": ODS_ORG_SYSTEM, "value": str(identifier.get("value", ""))}}


_DROP = object()


def _is_reference(element: dict[str, Any]) -> bool:
    """A Reference: a reference, identifier or display, and nothing a Reference does not have."""
    return bool(element.keys() & {"reference", "identifier", "display"}) and element.keys() <= REFERENCE_KEYS \
        and not {"system", "code"} & element.keys()


def _coded_string(key: str, value: str, parent: str) -> bool:
    if key in CODED_STRINGS or (key == "url" and parent in EXTENSION_KEYS):
        return True
    return bool(FHIR_DATE.match(value) or FHIR_TIME.match(value))


def nhs_number_residue(line: str) -> bool:
    """Whether an output line still holds anything shaped like a valid NHS number (anyone's, not only the
    subject's): the last check before a line is written, failing safe."""
    return any(nhs_number.is_valid(found) for found in NHS_NUMBER_SHAPED.findall(line))


@dataclass
class _Context:
    person_id: str
    patient_ref: str
    restricted: bool
    referenced: set[str] = field(default_factory=set)  # other persons this resource points at


def _meta(body: dict[str, Any], restricted: bool) -> dict[str, Any]:
    meta = body.get("meta") or {}
    out: dict[str, Any] = {"security": [PSEUDED]}
    if meta.get("lastUpdated"):
        out["lastUpdated"] = meta["lastUpdated"]
    tags = [t for t in meta.get("tag") or [] if t.get("system") == ODS_ORG_SYSTEM]
    if tags and not restricted:
        out["tag"] = tags  # the contributing organisation: provenance planners need, not about the person
    return out


def _instant(row: PersonRow) -> str:
    return row.changed.isoformat().replace("+00:00", "Z")
