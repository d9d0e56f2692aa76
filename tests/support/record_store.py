"""Seeds the store the way ingest writes it (docs/CONTRACTS.md §1), so record API tests need not run ingest.

Persons, source Patient records (one per feed, each with its own id, a person_link, a raw message for the
channel it came by), clinical resources whose patient references point at the person, versions, search rows
from `shared.search.extract`, provenance on every resource (`meta.source`, ODS and source-system tags,
`meta.security` labels) and one Provenance per message (targets versioned, `Condition/<id>/_history/1`, as ingest
writes them). `Scenario` builds one realistic person fed by every
kind of source.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from shared import labels as label_codes
from shared.db import create_db_engine, make_session_factory, transaction
from shared.fhir import (
    NHS_NUMBER_SYSTEM,
    NHS_VERIFICATION_ENGLAND,
    NHS_VERIFICATION_EXT,
    ODS_ORG_SYSTEM,
    SNOMED,
    canonical_json,
)
from shared.schema import Person, PersonLink, RawMessage, Resource, ResourceVersion, SearchParam
from shared.search import extract
from tests.support import data

SOURCE_SYSTEM_TAG = "urn:scr:source-system"
# The channel each kind of source arrives by (DESIGN.md): GP and community FHIR bundles, acute HL7 v2,
# community CSV, social-care Kafka events.
CHANNELS = {"EMIS": "fhir", "PAS": "hl7v2", "SystmOne": "community", "Mosaic": "socialcare", "RiO": "fhir"}
_T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


class RecordStore:
    """Writes persons and resources into a migrated database exactly as ingest stores them."""

    def __init__(self, url: str) -> None:
        self.engine = create_db_engine(url)
        self.sessions = make_session_factory(self.engine)
        self._clock = _T0

    def close(self) -> None:
        self.engine.dispose()

    def tick(self) -> datetime:
        """Distinct, increasing store timestamps so ordering by last update is deterministic."""
        self._clock += timedelta(minutes=1)
        return self._clock

    # ------------------------------------------------------------ persons and source Patients

    def person(self, nhs_number: str | None = None, person_id: str | None = None) -> str:
        """A person (`person_id` chosen by a test that needs persons in a known id order)."""
        person_id = person_id or str(uuid.uuid4())
        now = _now()
        with transaction(self.sessions) as session:
            session.add(Person(id=person_id, nhs_number=nhs_number, status="active", version=1, created=now,
                               updated=now))
        return person_id

    def source_patient(self, person_id: str, *, org: str, system: str, family: str = "Smith",
                       given: str = "Olivia", birth_date: str = "1980-05-01", gender: str = "female",
                       nhs_number: str | None = None, verified: bool = True, postcode: str = "LS1 4AP",
                       line: str = "1 Park Row", phone: str | None = "0113 496 0000", gp_ods: str | None = None,
                       local_id: tuple[str, str] | None = None, labels: tuple[str, ...] = (),
                       ) -> str:
        """A source Patient record from one feed, linked to `person_id`."""
        patient_id = str(uuid.uuid4())
        body: dict[str, Any] = {"resourceType": "Patient", "identifier": [],
                                "name": [{"use": "official", "family": family, "given": [given]}],
                                "gender": gender, "birthDate": birth_date,
                                "address": [{"line": [line], "city": "Leeds", "postalCode": postcode}]}
        if nhs_number:
            status = "01" if verified else "02"
            body["identifier"].append({"system": NHS_NUMBER_SYSTEM, "value": nhs_number, "extension": [{
                "url": NHS_VERIFICATION_EXT, "valueCodeableConcept": {"coding": [
                    {"system": NHS_VERIFICATION_ENGLAND, "code": status}]}}]})
        if local_id:
            body["identifier"].append({"system": local_id[0], "value": local_id[1]})
        if phone:
            body["telecom"] = [{"system": "phone", "value": phone, "use": "home"}]
        if gp_ods:
            body["generalPractitioner"] = [{"reference": f"Organization/{gp_ods}",
                                            "identifier": {"system": ODS_ORG_SYSTEM, "value": gp_ods}}]
        key = f"{local_id[0]}|{local_id[1]}" if local_id else f"patient:{patient_id}"
        self._store("Patient", patient_id, body, person_id=person_id, source_patient_id=patient_id, org=org,
                    system=system, key=key, labels=labels)
        now = _now()
        with transaction(self.sessions) as session:
            session.add(PersonLink(source_patient_id=patient_id, person_id=person_id,
                                   method="nhs-number" if nhs_number and verified else "new-person", score=None,
                                   explanation={}, created=now, updated=now))
        return patient_id

    # ------------------------------------------------------------ clinical resources

    def clinical(self, person_id: str, body: dict[str, Any], *, org: str, system: str,
                 labels: tuple[str, ...] = (), source_patient_id: str | None = None, key: str | None = None) -> str:
        """A clinical resource about `person_id` (its patient reference is set to the person)."""
        resource_id = str(uuid.uuid4())
        body = dict(body)
        reference = {"reference": f"Patient/{person_id}"}
        if body["resourceType"] in ("AllergyIntolerance", "Immunization", "EpisodeOfCare", "RelatedPerson",
                                    "Consent"):
            body["patient"] = reference
        elif body["resourceType"] == "Appointment":
            body["participant"] = [{"actor": reference, "status": "accepted"}]
        else:
            body["subject"] = reference
        self._store(body["resourceType"], resource_id, body, person_id=person_id, source_patient_id=source_patient_id,
                    org=org, system=system, key=key or f"{body['resourceType']}:{resource_id}", labels=labels)
        return resource_id

    def directory(self, body: dict[str, Any], *, org: str, system: str) -> str:
        """A resource about no person (an Organization, a Practitioner)."""
        resource_id = str(uuid.uuid4())
        self._store(body["resourceType"], resource_id, body, person_id=None, source_patient_id=None, org=org,
                    system=system, key=f"{body['resourceType']}:{resource_id}", labels=())
        return resource_id

    def update(self, resource_type: str, resource_id: str, changes: dict[str, Any],
               labels: tuple[str, ...] | None = None) -> int:
        """A new version with `changes` applied; returns its version id."""
        with transaction(self.sessions) as session:
            row = session.get(Resource, (resource_type, resource_id))
            assert row is not None
            content = {k: v for k, v in row.body.items() if k not in ("id", "meta")} | changes
            new_labels = tuple(row.labels) if labels is None else labels
            self._write(session, row, content, row.version_id + 1, new_labels, deleted=False)
            return row.version_id

    def delete(self, resource_type: str, resource_id: str) -> None:
        with transaction(self.sessions) as session:
            row = session.get(Resource, (resource_type, resource_id))
            assert row is not None
            content = {k: v for k, v in row.body.items() if k not in ("id", "meta")}
            self._write(session, row, content, row.version_id + 1, tuple(row.labels), deleted=True)

    def merge(self, retired_person: str, surviving_person: str) -> None:
        """What ingest does on a merge: move everything to the survivor and mark the retired person merged."""
        with transaction(self.sessions) as session:
            for row in session.scalars(select(Resource).where(Resource.person_id == retired_person)):
                row.person_id = surviving_person
                session.execute(delete(SearchParam).where(SearchParam.resource_type == row.resource_type,
                                                          SearchParam.resource_id == row.id))
                self._index(session, row.resource_type, row.id, surviving_person, row.body)
            for link in session.scalars(select(PersonLink).where(PersonLink.person_id == retired_person)):
                link.person_id, link.method = surviving_person, "merge"
            person = session.get(Person, retired_person)
            assert person is not None
            person.status, person.merged_into, person.version = "merged", surviving_person, person.version + 1

    # ------------------------------------------------------------ how ingest writes one resource

    def _store(self, resource_type: str, resource_id: str, content: dict[str, Any], *, person_id: str | None,
               source_patient_id: str | None, org: str, system: str, key: str, labels: tuple[str, ...]) -> None:
        with transaction(self.sessions) as session:
            row = Resource(resource_type=resource_type, id=resource_id, version_id=0, person_id=person_id,
                           source_patient_id=source_patient_id, source_system=system, source_org=org, source_key=key,
                           content_hash="", labels=[], last_updated=self._clock, deleted=False, body={})
            session.add(row)
            self._write(session, row, content, 1, labels, deleted=False)

    def _write(self, session: Session, row: Resource, content: dict[str, Any], version: int,
               labels: tuple[str, ...], *, deleted: bool) -> None:
        stamp = self.tick()
        raw_id = str(uuid.uuid4())
        channel = CHANNELS.get(row.source_system, "fhir")
        session.add(RawMessage(id=raw_id, channel=channel, received_at=stamp,
                               content_hash=hashlib.sha256(raw_id.encode()).hexdigest(), content=b"{}",
                               content_type="application/json", sender_org=row.source_org,
                               sender_system=row.source_system, status="processed", attempts=1,
                               processed_at=stamp, detail={}))
        body = content | {"id": row.id, "meta": _meta(row.source_org, row.source_system, version, stamp, labels)}
        row.version_id, row.body, row.labels = version, body, list(labels)
        row.last_updated, row.deleted = stamp, deleted
        row.content_hash = hashlib.sha256(canonical_json(content)).hexdigest()
        row.source_updated = stamp
        session.add(ResourceVersion(resource_type=row.resource_type, id=row.id, version_id=version,
                                    person_id=row.person_id, source_org=row.source_org, raw_message_id=raw_id,
                                    labels=list(labels), last_updated=stamp, deleted=deleted, body=body))
        session.flush()
        session.execute(delete(SearchParam).where(SearchParam.resource_type == row.resource_type,
                                                  SearchParam.resource_id == row.id))
        if not deleted:
            self._index(session, row.resource_type, row.id, row.person_id, body)
        if row.resource_type != "Provenance":
            self._provenance(session, row, raw_id, stamp)

    @staticmethod
    def _index(session: Session, resource_type: str, resource_id: str, person_id: str | None,
               body: dict[str, Any]) -> None:
        for found in extract(body):
            session.add(SearchParam(resource_type=resource_type, resource_id=resource_id, person_id=person_id,
                                    param=found.param, system=found.system, code=found.code, text=found.text,
                                    date_low=found.date_low, date_high=found.date_high, ref_type=found.ref_type,
                                    ref_id=found.ref_id))

    def _provenance(self, session: Session, target: Resource, raw_id: str, stamp: datetime) -> None:
        provenance_id = str(uuid.uuid4())
        body = {"resourceType": "Provenance", "id": provenance_id,
                "meta": _meta(target.source_org, target.source_system, 1, stamp, ()),
                "target": [{"reference": f"{target.resource_type}/{target.id}/_history/{target.version_id}"}],
                "recorded": stamp.isoformat(),
                "agent": [{"who": {"identifier": {"system": ODS_ORG_SYSTEM, "value": target.source_org}}}],
                "entity": [{"role": "source", "what": {"reference": f"urn:scr:raw:{raw_id}"}}]}
        session.add(Resource(resource_type="Provenance", id=provenance_id, version_id=1, person_id=target.person_id,
                             source_patient_id=target.source_patient_id, source_system=target.source_system,
                             source_org=target.source_org, source_key=f"raw:{raw_id}", content_hash=raw_id,
                             labels=[], last_updated=stamp, deleted=False, body=body))
        session.add(ResourceVersion(resource_type="Provenance", id=provenance_id, version_id=1,
                                    person_id=target.person_id, source_org=target.source_org, raw_message_id=raw_id,
                                    labels=[], last_updated=stamp, deleted=False, body=body))
        session.flush()
        self._index(session, "Provenance", provenance_id, target.person_id, body)


def _meta(org: str, system: str, version: int, stamp: datetime, labels: tuple[str, ...]) -> dict[str, Any]:
    meta: dict[str, Any] = {"versionId": str(version), "lastUpdated": stamp.isoformat().replace("+00:00", "Z"),
                            "source": f"urn:scr:ods:{org}:{system}",
                            "tag": [{"system": ODS_ORG_SYSTEM, "code": org},
                                    {"system": SOURCE_SYSTEM_TAG, "code": system}]}
    if labels:
        meta["security"] = [label_codes.security_coding(label) for label in labels]
    return meta


# ---------------------------------------------------------------- FHIR bodies


def coded(code: str, display: str, system: str = SNOMED) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def allergy(code: str = "91936005", display: str = "Allergy to penicillin") -> dict[str, Any]:
    return {"resourceType": "AllergyIntolerance", "code": coded(code, display), "recordedDate": "2024-02-01",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-"
                                                     "clinical", "code": "active"}]}}


def condition(code: str, display: str, onset: str = "2023-06-01") -> dict[str, Any]:
    return {"resourceType": "Condition", "code": coded(code, display), "onsetDateTime": onset,
            "category": [coded("problem-list-item", "Problem List Item",
                               "http://terminology.hl7.org/CodeSystem/condition-category")],
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]}}


def medication(code: str = "322236009", display: str = "Paracetamol 500mg tablets") -> dict[str, Any]:
    return {"resourceType": "MedicationStatement", "status": "active",
            "medicationCodeableConcept": coded(code, display), "effectiveDateTime": "2025-03-01"}


def observation(code: str, display: str, when: str, value: float, status: str = "final") -> dict[str, Any]:
    return {"resourceType": "Observation", "status": status, "code": coded(code, display, "http://loinc.org"),
            "category": [coded("vital-signs", "Vital Signs",
                               "http://terminology.hl7.org/CodeSystem/observation-category")],
            "effectiveDateTime": when, "valueQuantity": {"value": value, "unit": "mm[Hg]"}}


def encounter(when: str, *, location: bool = True, status: str = "finished") -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Encounter", "status": status,
                            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                            "period": {"start": when, "end": when}}
    if location:
        body["location"] = [{"location": {"display": "Ward 12, St James's"}}]
    return body


def episode_of_care(start: str = "2025-09-01") -> dict[str, Any]:
    return {"resourceType": "EpisodeOfCare", "status": "active", "period": {"start": start},
            "type": [coded("1187000000107", "Adult social care involvement")]}


@dataclass
class Scenario:
    """One person fed by every kind of source, and a few others, for the record API's tests."""

    store: RecordStore
    nhs_number: str = data.NHS_NUMBERS[0]
    person: str = ""
    gp_patient: str = ""
    acute_patient: str = ""
    community_patient: str = ""
    social_patient: str = ""
    ids: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, store: RecordStore, nhs_number: str = data.NHS_NUMBERS[0]) -> Scenario:
        s = cls(store, nhs_number)
        # Local identifiers are unique per sender; a second scenario in one store gets its own.
        n = "" if nhs_number == data.NHS_NUMBERS[0] else f"-{nhs_number}"
        s.person = store.person(nhs_number)
        s.gp_patient = store.source_patient(s.person, org=data.GP_ODS, system="EMIS", nhs_number=nhs_number,
                                            family="Smith", given="Olivia", gp_ods=data.GP_ODS,
                                            local_id=("https://emis.example/Id/patient", f"E1001{n}"))
        s.acute_patient = store.source_patient(s.person, org=data.ACUTE_ODS, system="PAS", nhs_number=nhs_number,
                                               family="SMITH", given="Olivia", postcode="LS9 7TF",
                                               phone="07700 900123", gp_ods=data.GP_ODS,
                                               local_id=("https://fhir.rr8.nhs.uk/Id/mrn", f"MRN123{n}"))
        s.community_patient = store.source_patient(s.person, org=data.COMMUNITY_ODS, system="SystmOne",
                                                   nhs_number=nhs_number, family="Smith",
                                                   local_id=("https://fhir.ry6.nhs.uk/Id/local", f"C-77{n}"))
        s.social_patient = store.source_patient(s.person, org=data.SOCIAL_CARE_ODS, system="Mosaic",
                                                nhs_number=nhs_number, family="Smith", labels=("SOC",),
                                                local_id=("https://mosaic.example/Id/person", f"M-42{n}"))
        gp, acute = dict(org=data.GP_ODS, system="EMIS"), dict(org=data.ACUTE_ODS, system="PAS")
        ids = s.ids
        ids["allergy_gp"] = store.clinical(s.person, allergy(), **gp)
        ids["allergy_acute"] = store.clinical(s.person, allergy(), **acute)
        ids["med_gp"] = store.clinical(s.person, medication(), **gp)
        ids["med_acute"] = store.clinical(s.person, medication(), **acute)
        ids["asthma"] = store.clinical(s.person, condition("195967001", "Asthma"), **gp)
        ids["hiv"] = store.clinical(s.person, condition("86406008", "HIV infection"), labels=("HIV",), **gp)
        ids["sealed"] = store.clinical(s.person, condition("35489007", "Depressive disorder"), labels=("V",), **gp)
        ids["bp_1"] = store.clinical(s.person, observation("8480-6", "Systolic BP", "2025-01-10T10:00:00Z", 128),
                                     **gp)
        ids["bp_2"] = store.clinical(s.person, observation("8480-6", "Systolic BP", "2025-06-10T10:00:00Z", 135),
                                     **acute)
        ids["admission"] = store.clinical(s.person, encounter("2025-06-10T09:00:00Z"), **acute)
        ids["community_visit"] = store.clinical(s.person, encounter("2025-07-01T14:00:00Z", location=False),
                                                org=data.COMMUNITY_ODS, system="SystmOne")
        ids["social_episode"] = store.clinical(s.person, episode_of_care(), labels=("SOC",),
                                               org=data.SOCIAL_CARE_ODS, system="Mosaic")
        return s

    @property
    def withheld_by_default(self) -> set[str]:
        """What a clinician outside the GP practice may not see under the default rules."""
        return {self.ids["hiv"], self.ids["sealed"]}
