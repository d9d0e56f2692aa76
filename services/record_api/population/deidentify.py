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

from dataclasses import dataclass
from typing import Any

from services.record_api.enforcement import LOCATION_ELEMENTS
from services.record_api.population.demographics import PersonRow
from services.record_api.population.deprivation import DeprivationLookup
from services.record_api.population.pseudonym import Pseudonymiser
from services.record_api.resource_types import DIRECTORY_TYPES
from shared.fhir import ETHNIC_CATEGORY_ENGLAND, ETHNIC_CATEGORY_EXT, ODS_ORG_SYSTEM
from shared.labels import CATEGORIES, VERY_RESTRICTED

SOCIAL_CARE = "SOC"
# Err on the side of exclusion: every sensitivity category except the provenance marker SOC, and V.
EXCLUDED_LABELS = (frozenset(CATEGORIES) - {SOCIAL_CARE}) | {VERY_RESTRICTED}
DIRECT_IDENTIFIERS = ("identifier", "text", "contained", "note", "name", "telecom", "address", "contact", "photo",
                      # free text and attached documents (letters carry names and addresses)
                      "presentedForm", "comment", "patientInstruction", "description")
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


def recipient_of(subject: str, ods_code: str | None) -> str:
    """The export recipient a pseudonym key is derived for: the system token's organisation and subject."""
    return f"{ods_code or '-'}/{subject}"


def person_pseudonym(pseudonymiser: Pseudonymiser, person_id: str, nhs_number: str | None) -> str:
    """A person's pseudonym: from the NHS number when the person has one (stable across merges and re-linking),
    otherwise from the person id."""
    return pseudonymiser.pseudonym(f"nhs:{nhs_number}" if nhs_number else f"person:{person_id}")


def resource_pseudonym(pseudonymiser: Pseudonymiser, resource_type: str, resource_id: str) -> str:
    return pseudonymiser.pseudonym(f"{resource_type}/{resource_id}")


def is_excluded(labels: list[str] | None, withheld: frozenset[str] = frozenset()) -> bool:
    """Whether an item with these labels stays out of secondary use (for a person who withheld `withheld`)."""
    present = set(labels or ())
    return bool(present & EXCLUDED_LABELS or present & withheld)


def postcode_district(postcode: str | None) -> str | None:
    """The outward code ("LS1" of "LS1 4AP"): the coarsest place a postcode gives."""
    compact = "".join((postcode or "").split()).upper()
    return compact[:-3] if len(compact) >= 5 else None


class Deidentifier:
    """Turns stored bodies into what one recipient may receive."""

    def __init__(self, pseudonymiser: Pseudonymiser, lookup: DeprivationLookup) -> None:
        self.pseudonymiser = pseudonymiser
        self.lookup = lookup

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

    def resource(self, body: dict[str, Any], *, person_id: str, person_nhs: str | None,
                 restricted: bool) -> dict[str, Any]:
        """A clinical resource with identifiers removed and every patient-data id pseudonymised."""
        resource_type = body.get("resourceType", "")
        dropped = set(DIRECT_IDENTIFIERS)
        if restricted:
            dropped |= set(RESTRICTED_ELEMENTS.get(resource_type, ()))
        kept = {k: v for k, v in body.items() if k not in dropped and k not in ("id", "meta")}
        out: dict[str, Any] = {"resourceType": resource_type,
                               "id": resource_pseudonym(self.pseudonymiser, resource_type, str(body.get("id"))),
                               "meta": _meta(body, restricted)}
        context = _Context(person_id, person_pseudonym(self.pseudonymiser, person_id, person_nhs), restricted)
        out.update(self._rewrite(kept, context))
        return out

    def directory(self, body: dict[str, Any]) -> dict[str, Any]:
        """A directory resource (Organization, Location): no patient data; narrative dropped, id kept so that
        references to it still resolve."""
        return {k: v for k, v in body.items() if k not in ("text", "contained")}

    def _rewrite(self, value: Any, context: _Context) -> Any:
        if isinstance(value, list):
            return [self._rewrite(v, context) for v in value]
        if not isinstance(value, dict):
            return value
        if isinstance(value.get("reference"), str):
            return self._reference(value, context)
        return {k: self._rewrite(v, context) for k, v in value.items()}

    def _reference(self, ref: dict[str, Any], context: _Context) -> dict[str, Any]:
        parts = ref["reference"].split("/_history")[0].rstrip("/").split("/")
        if len(parts) < 2 or not parts[-2][:1].isupper():
            return {}  # a contained, urn: or raw-archive reference: nothing outside the export resolves it
        target_type, target_id = parts[-2], parts[-1]
        if target_type == "Patient":
            pseudonym = context.patient_ref if target_id == context.person_id else \
                person_pseudonym(self.pseudonymiser, target_id, None)
            return {"reference": f"Patient/{pseudonym}"}
        if target_type in DIRECTORY_TYPES:
            if context.restricted and target_type in PLACES:
                return {}  # where an S-flagged person was seen is location data
            return {k: v for k, v in ref.items() if k in ("reference", "type", "identifier", "display")}
        return {"reference": f"{target_type}/{resource_pseudonym(self.pseudonymiser, target_type, target_id)}"}


@dataclass(frozen=True)
class _Context:
    person_id: str
    patient_ref: str
    restricted: bool


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
