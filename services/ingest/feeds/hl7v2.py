"""Acute HL7 v2.4 ADT (NHS ITK conventions) to UK Core FHIR: Patient, Encounter, AllergyIntolerance,
Condition, RelatedPerson, and a dissent Consent for ZU8-2 = 2. Pure: text in, mapped resources out.

Conventions (reference/uk-domain.md §6): NHS number in PID-3 with CX-4 = NHS (CX-5 NH, HN or blank);
tracing status NSTS01-08 in PID-32; registered practice ODS code in PD1-3 XON-3; sex as 1/2/9/0 or M/F/U;
ZU8-2 consent to share, ZU8-4 = 2 the national S-flag; A40 names the retired record in MRG-1.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from services.ingest.feeds import adt_encounter
from services.ingest.feeds.hl7v2_message import Message, Segment, fhir_datetime, parse, parse_date, parse_ts
from services.ingest.feeds.model import AdapterError, Mapped, MappedMessage, Merge, MergeRequest
from shared import nhs_number
from shared.fhir import (
    ETHNIC_CATEGORY_ENGLAND,
    ETHNIC_CATEGORY_EXT,
    NHS_NUMBER_SYSTEM,
    NHS_VERIFICATION_ENGLAND,
    NHS_VERIFICATION_EXT,
    ODS_ORG_SYSTEM,
    SNOMED,
    Issue,
)

PATIENT_EVENTS = frozenset({"A28", "A31"})
MERGE_EVENT = "A40"
SUPPORTED_EVENTS = adt_encounter.EVENTS | PATIENT_EVENTS | {MERGE_EVENT}
NHS_TYPES = frozenset({"NH", "HN", ""})
SEX = {"1": "male", "M": "male", "2": "female", "F": "female", "9": "unknown", "U": "unknown", "0": "unknown",
       "O": "other", "A": "other"}
PATIENT_CLASS = {"I": ("IMP", "inpatient encounter"), "E": ("EMER", "emergency"), "O": ("AMB", "ambulatory"),
                 "P": ("PRENC", "pre-admission"), "W": ("PRENC", "pre-admission"), "B": ("AMB", "ambulatory"),
                 "C": ("AMB", "ambulatory"), "R": ("IMP", "inpatient encounter"), "N": ("AMB", "ambulatory"),
                 "U": ("AMB", "ambulatory")}
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
CODING_SYSTEMS = {"I10": ICD10, "I9": "http://hl7.org/fhir/sid/icd-9-cm", "SCT": SNOMED, "SNM": SNOMED,
                  "SNOMED": SNOMED, "READ": "http://read.info/readv2", "99R2": "http://read.info/readv2"}
ALLERGY_CATEGORY = {"DA": "medication", "FA": "food", "EA": "environment", "AA": "environment",
                    "PA": "environment", "LA": "environment"}
LOCAL_ID_SYSTEM = "urn:scr:local-patient-id:{}"
VISIT_SYSTEM = "urn:scr:visit:{}"
GMP_SYSTEM = "https://fhir.hl7.org.uk/Id/gmp-number"
DISSENT = ("416409005", "Refused consent for upload to local shared electronic record")
CONSENT = ("425691002", "Consent given for electronic record sharing")
# XPN-7 name type (HL7 table 0200) to HumanName.use, after the HL7 v2-to-FHIR ConceptMap table-hl70200-to-name-use
# (and FHIR's own v2 map for S). Blank is the legal name (ITK); A (v2.4 alias), unmapped there, stays usual as
# before; types with no FHIR equivalent (B birth, C adopted, P partner...) carry no use.
NAME_USE = {"": "official", "L": "official", "R": "official", "D": "usual", "A": "usual", "M": "maiden",
            "N": "nickname", "TEMP": "temp", "NAV": "temp", "BAD": "old", "NOUSE": "old", "S": "anonymous",
            "MSK": "anonymous"}
# XTN-2 use code (table 0201) and XTN-3 equipment type (table 0202) to ContactPoint, after the v2-to-FHIR
# ConceptMaps. A use code they leave unmapped (ASN, EMR...) takes the field's own use (PID-13 home, PID-14 work);
# ORN and VHN are other homes. A mobile (CP) is use mobile whatever XTN-2 says.
TELECOM_USE = {"PRN": "home", "ORN": "home", "VHN": "home", "WPN": "work", "PRS": "mobile"}
TELECOM_SYSTEM = {"PH": "phone", "CP": "phone", "FX": "fax", "BP": "pager", "MD": "other", "TDD": "other",
                  "TTY": "other", "INTERNET": "email", "X.400": "email"}
TELECOM_SYSTEM_BY_USE = {"NET": "email", "BPN": "pager"}  # when XTN-3 is blank
PATIENT_REF = "urn:scr:hl7:patient"
ENCOUNTER_REF = "urn:scr:hl7:encounter"


def map_adt(text: str) -> MappedMessage:
    """Map one ADT message; AdapterError says which segment and field is at fault."""
    message = parse(text)
    msh = message.first("MSH")
    assert msh is not None  # parse() guarantees the message starts with MSH
    event, at = _header(msh, message)
    pid = _required_segment(message, "PID")
    org = msh.get(4)
    patient, patient_key = _patient(pid, message.first("PD1"), org, at)
    mapped = MappedMessage(source_system=msh.get(3) or None, source_org=org)
    mapped.items.append(Mapped(patient, patient_key, parse_ts(msh.get(7)), refs=(PATIENT_REF,),
                               restricted=_s_flag(message), where="PID"))
    updated = parse_ts(msh.get(7))
    visit = None
    if event in adt_encounter.EVENTS:
        visit = _encounter(_required_segment(message, "PV1"), message.first("PV2"), event, at, org, updated)
        mapped.items.append(visit)
    for segment in message.all("NK1"):
        mapped.items.append(_related_person(segment, patient_key, updated))
    for segment in message.all("AL1"):
        mapped.items.append(_allergy(segment, patient_key, org, updated))
    for segment in message.all("DG1"):
        mapped.items.append(_condition(segment, patient_key, visit, org, updated))
    if consent := _consent(_zu8(message, 2), patient_key, at, updated):
        mapped.items.append(consent)
    if event == MERGE_EVENT:
        mapped.merge = _merge_request(_required_segment(message, "MRG"), org)
    return mapped


def _fail(message: str, segment: str, field: int, component: int = 0, code: str = "102") -> AdapterError:
    where = f"{segment}-{field}" + (f".{component}" if component else "")
    return AdapterError(Issue(message, where, code="value" if code == "102" else "required"),
                        hl7_location=(segment, field, component), hl7_code=code)


def _header(msh: Segment, message: Message) -> tuple[str, str]:
    if msh.get(9, 1) != "ADT":
        raise _fail(f"message type {msh.get(9, 1)!r} is not accepted; send ADT", "MSH", 9, 1, "200")
    evn = message.first("EVN")
    event = msh.get(9, 2) or (evn.get(1) if evn else "")
    if event not in SUPPORTED_EVENTS:
        raise _fail(f"ADT event {event!r} is not supported", "MSH", 9, 2, "201")
    if not msh.get(10):
        raise _fail("MSH-10 message control id is required", "MSH", 10, code="101")
    if not msh.get(4):
        raise _fail("MSH-4 sending facility (the sender's ODS code) is required", "MSH", 4, code="101")
    sent = fhir_datetime(msh.get(7))
    if sent is None:
        raise _fail(f"MSH-7 {msh.get(7)!r} is not an HL7 timestamp", "MSH", 7)
    occurred = fhir_datetime(evn.get(6) or evn.get(2)) if evn else None
    return event, occurred or sent


def _required_segment(message: Message, name: str) -> Segment:
    segment = message.first(name)
    if segment is None:
        raise AdapterError(Issue(f"the {name} segment is required for this event", name, code="required"),
                           hl7_location=(name, 0, 0), hl7_code="100")
    return segment


def _zu8(message: Message, field: int) -> str:
    segment = message.first("ZU8")
    return segment.get(field) if segment else ""


def _s_flag(message: Message) -> bool | None:
    """ZU8-4 location hiding: 2 (the national S-flag) restricts, any other value or the HL7 null lifts it. No ZU8,
    or an empty ZU8-4, says nothing about it (most events carry no ZU8), so the stored flag stands: None, as a
    message without ZU8-2 leaves a recorded dissent as it is."""
    zu8 = message.first("ZU8")
    if zu8 is None or not (zu8.get(4) or zu8.is_null(4)):
        return None
    return zu8.get(4) == "2"


# ------------------------------------------------------------------------------------------- Patient

def _patient(pid: Segment, pd1: Segment | None, org: str, at: str) -> tuple[dict[str, Any], str]:
    identifiers, key = _identifiers(pid, org)
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers,
                               "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]}}
    names = [_name(rep) for rep in pid.repetitions(5) if rep and rep[0]]
    if names:
        patient["name"] = names
    if pid.get(7):
        birth = parse_date(pid.get(7))
        if birth is None:
            raise _fail(f"PID-7 date of birth {pid.get(7)!r} is not a date (YYYYMMDD)", "PID", 7)
        patient["birthDate"] = birth
    if pid.get(8):
        if pid.get(8).upper() not in SEX:
            raise _fail(f"PID-8 sex {pid.get(8)!r} is not in HL7 table 0001 (1/2/9/0 or M/F/U/O/A)", "PID", 8,
                        code="103")
        patient["gender"] = SEX[pid.get(8).upper()]
    if addresses := [_address(rep) for rep in pid.repetitions(11) if any(rep)]:
        patient["address"] = addresses
    if telecom := _telecoms(pid, ((13, "home"), (14, "work"))):
        patient["telecom"] = telecom
    if ethnic := pid.get(22):
        patient["extension"] = [{"url": ETHNIC_CATEGORY_EXT, "valueCodeableConcept": {"coding": [
            {"system": ETHNIC_CATEGORY_ENGLAND, "code": ethnic}]}}]
    _death(patient, pid)
    if pd1 is not None:
        _general_practitioner(patient, pd1)
    return patient, key


def _identifiers(pid: Segment, org: str) -> tuple[list[dict[str, Any]], str]:
    identifiers: list[dict[str, Any]] = []
    local_key = nhs_key = ""
    for position, rep in enumerate(pid.repetitions(3)):
        value = rep[0].strip() if rep else ""
        authority = rep[3].strip() if len(rep) > 3 else ""
        kind = rep[4].strip().upper() if len(rep) > 4 else ""
        if not value:
            continue
        if authority.upper() == "NHS" and kind in NHS_TYPES:
            if problem := nhs_number.problem(value):
                raise AdapterError(Issue(f"PID-3 repetition {position + 1}: {problem}", "PID-3", code="value"),
                                   hl7_location=("PID", 3, 1), hl7_code="102")
            identifiers.insert(0, _nhs_identifier(nhs_number.normalise(value), pid.get(32)))
            nhs_key = f"nhs:{nhs_number.normalise(value)}"
        else:
            system = LOCAL_ID_SYSTEM.format(authority or org)
            identifiers.append({"system": system, "value": value, "type": {"coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": kind or "MR"}]}})
            local_key = local_key or f"mrn:{authority or org}|{value}"
    if not identifiers:
        raise _fail("PID-3 must carry at least one patient identifier", "PID", 3, code="101")
    return identifiers, local_key or nhs_key


def _nhs_identifier(number: str, reliability: str) -> dict[str, Any]:
    identifier: dict[str, Any] = {"system": NHS_NUMBER_SYSTEM, "value": number}
    code = reliability.upper()
    if code.startswith("NSTS") and code[4:] in {f"0{n}" for n in range(1, 9)}:
        identifier["extension"] = [{"url": NHS_VERIFICATION_EXT, "valueCodeableConcept": {"coding": [
            {"system": NHS_VERIFICATION_ENGLAND, "code": code[4:]}]}}]
    elif code.startswith("NSTS"):
        raise _fail(f"PID-32 {reliability!r} is not a tracing status (NSTS01-NSTS08)", "PID", 32, code="103")
    return identifier


def _name(rep: list[str]) -> dict[str, Any]:
    name: dict[str, Any] = {}
    if use := NAME_USE.get((rep[6] if len(rep) > 6 else "").upper()):
        name["use"] = use
    if rep[0]:
        name["family"] = rep[0]
    given = [part for part in rep[1:3] if part]
    if given:
        name["given"] = given
    if len(rep) > 4 and rep[4]:
        name["prefix"] = [rep[4]]
    return name


def _telecoms(segment: Segment, fields: tuple[tuple[int, str | None], ...]) -> list[dict[str, Any]]:
    """The ContactPoints of the XTN fields given with each one's own use, in the order sent."""
    return [contact for number, use in fields for rep in segment.repetitions(number)
            if (contact := _contact_point(rep, use))]


def _contact_point(rep: list[str], field_use: str | None) -> dict[str, Any] | None:
    """One XTN repetition (1 number, 2 use, 3 equipment, 4 e-mail address); None when it has no number or address."""
    number, use_code, equipment, address = [*rep, "", "", ""][:4]
    use_code, equipment = use_code.upper(), equipment.upper()
    system = TELECOM_SYSTEM.get(equipment) or TELECOM_SYSTEM_BY_USE.get(use_code, "phone")
    value = (address or number) if system == "email" else number
    if not value:
        return None
    contact: dict[str, Any] = {"system": system, "value": value}
    if use := "mobile" if equipment == "CP" else TELECOM_USE.get(use_code, field_use):
        contact["use"] = use
    return contact


def _address(rep: list[str]) -> dict[str, Any]:
    parts = rep + [""] * 7
    address: dict[str, Any] = {"use": "home"}
    if lines := [p for p in parts[0:2] if p]:
        address["line"] = lines
    for key, value in (("city", parts[2]), ("district", parts[3]), ("postalCode", parts[4]),
                       ("country", parts[5])):
        if value:
            address[key] = value
    return address


def _death(patient: dict[str, Any], pid: Segment) -> None:
    if pid.get(29):
        died = fhir_datetime(pid.get(29))
        if died is None:
            raise _fail(f"PID-29 date of death {pid.get(29)!r} is not an HL7 timestamp", "PID", 29)
        patient["deceasedDateTime"] = died
    elif pid.get(30).upper() == "Y":
        patient["deceasedBoolean"] = True


def _general_practitioner(patient: dict[str, Any], pd1: Segment) -> None:
    references = []
    if practice := pd1.get(3, 3):
        references.append({"type": "Organization", "identifier": {"system": ODS_ORG_SYSTEM, "value": practice}})
    if gp := pd1.get(4, 1):
        references.append({"type": "Practitioner", "identifier": {"system": GMP_SYSTEM, "value": gp}})
    if references:
        patient["generalPractitioner"] = references


# ------------------------------------------------------------------------------------------- visit

def _encounter(pv1: Segment, pv2: Segment | None, event: str, at: str, org: str, updated: Any) -> Mapped:
    visit = pv1.get(19)
    if not visit:
        raise _fail("PV1-19 visit number is required for encounter events", "PV1", 19, code="101")
    patient_class = pv1.get(2).upper()
    if patient_class not in PATIENT_CLASS:
        raise _fail(f"PV1-2 patient class {pv1.get(2)!r} is not in HL7 table 0004", "PV1", 2, code="103")
    code, display = PATIENT_CLASS[patient_class]
    fields: dict[str, Any] = {
        "identifier": [{"system": VISIT_SYSTEM.format(org), "value": visit}],
        "class": {"system": ACT_CODE, "code": code, "display": display},
        "subject": {"reference": PATIENT_REF},
        "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Encounter"]},
    }
    if specialty := pv1.get(10):
        fields["serviceType"] = {"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/Specialty",
                                             "code": specialty}]}
    if disposition := pv1.get(36):
        fields["hospitalization"] = {"dischargeDisposition": {"coding": [
            {"system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-DischargeMethodEngland", "code": disposition}]}}
    adt = adt_encounter.EncounterEvent(
        event=event, at=at, fields=fields, location=_location(pv1), admitted=_time(pv1, 44),
        discharged=_time(pv1, 45), expected=_time(pv2, 8) if pv2 is not None else None)
    change: Merge = _deleting(adt, "hospitalization") if pv1.is_null(36) else adt
    refused_first = partial(adt_encounter.refusal_before, adt) if event in adt_encounter.ENDINGS else None
    return Mapped(change(None), f"visit:{visit}", updated, refs=(ENCOUNTER_REF,), patient_ref=PATIENT_REF,
                  merge=change, where="PV1", replay_when_late=True, refused_first=refused_first)


def _deleting(change: Merge, element: str) -> Merge:
    """`change`, and then `element` gone: an event carries the stored Encounter's details over unless it
    sends them again, so a detail the sender deletes with the HL7 null must be taken out of the stored one."""
    def merge(current: dict[str, Any] | None) -> dict[str, Any]:
        encounter = change(current)
        encounter.pop(element, None)
        return encounter
    return merge


def _location(pv1: Segment) -> str | None:
    reps = pv1.repetitions(3)
    if not reps:
        return None
    parts = [p for p in (reps[0] + ["", "", ""])[:3] if p]
    return " ".join(parts) or None


def _time(segment: Segment, field: int) -> str | None:
    value = segment.get(field)
    if not value:
        return None
    moment = fhir_datetime(value)
    if moment is None:
        raise _fail(f"{segment.name}-{field} {value!r} is not an HL7 timestamp", segment.name, field)
    return moment


# ------------------------------------------------------------------------------------------- others

def _coded(segment: Segment, field: int, org: str) -> dict[str, Any]:
    code, text = segment.get(field, 1), segment.get(field, 2)
    if not code and not text:
        raise _fail(f"{segment.name}-{field} must carry a code", segment.name, field, code="101")
    concept: dict[str, Any] = {}
    if code:
        system = CODING_SYSTEMS.get(segment.get(field, 3).upper(), f"urn:scr:local-code:{org}")
        concept["coding"] = [{"system": system, "code": code} | ({"display": text} if text else {})]
    if text:
        concept["text"] = text
    return concept


def _allergy(al1: Segment, patient_key: str, org: str, updated: Any) -> Mapped:
    code = _coded(al1, 3, org)
    allergy: dict[str, Any] = {
        "resourceType": "AllergyIntolerance", "patient": {"reference": PATIENT_REF}, "code": code,
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                                       "code": "active"}]},
    }
    if category := ALLERGY_CATEGORY.get(al1.get(2).upper()):
        allergy["category"] = [category]
    if al1.get(4).upper() in ("SV", "MO", "MI"):
        allergy["criticality"] = "high" if al1.get(4).upper() == "SV" else "low"
    if reaction := al1.get(5):
        allergy["reaction"] = [{"manifestation": [{"text": reaction}]}]
    if identified := parse_date(al1.get(6)):
        allergy["onsetDateTime"] = identified
    key = al1.get(3, 1) or al1.get(3, 2)
    return Mapped(allergy, f"allergy:{patient_key}:{key}", updated, patient_ref=PATIENT_REF,
                  where=f"AL1[{al1.index}]")


def _condition(dg1: Segment, patient_key: str, visit: Mapped | None, org: str, updated: Any) -> Mapped:
    code = _coded(dg1, 3, org)
    verification = "provisional" if dg1.get(6).upper() in ("A", "W") else "confirmed"
    condition: dict[str, Any] = {
        "resourceType": "Condition", "subject": {"reference": PATIENT_REF}, "code": code,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                  "code": "encounter-diagnosis"}]}],
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": verification}]},
    }
    if visit is not None:
        condition["encounter"] = {"reference": ENCOUNTER_REF}
    if recorded := _time(dg1, 5):
        condition["recordedDate"] = recorded
    scope = visit.source_key if visit else patient_key
    key = dg1.get(3, 1) or dg1.get(3, 2)
    return Mapped(condition, f"diagnosis:{scope}:{key}", updated, patient_ref=PATIENT_REF,
                  confidential=dg1.get(18).upper() == "Y", where=f"DG1[{dg1.index}]")


def _related_person(nk1: Segment, patient_key: str, updated: Any) -> Mapped:
    person: dict[str, Any] = {"resourceType": "RelatedPerson", "patient": {"reference": PATIENT_REF},
                              "active": True}
    if names := [_name(rep) for rep in nk1.repetitions(2) if rep and rep[0]]:
        person["name"] = names
    if relationship := nk1.get(3, 1):
        person["relationship"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0063",
                                               "code": relationship}], "text": nk1.get(3, 2) or relationship}]
    if addresses := [_address(rep) for rep in nk1.repetitions(4) if any(rep)]:
        person["address"] = addresses
    if telecom := _telecoms(nk1, ((5, None), (6, "work"))):
        person["telecom"] = telecom
    return Mapped(person, f"nok:{patient_key}:{nk1.get(1) or nk1.index}", updated, patient_ref=PATIENT_REF,
                  where=f"NK1[{nk1.index}]")


def _consent(zu8_2: str, patient_key: str, at: str, updated: Any) -> Mapped | None:
    """ZU8-2 (DCR consent to share): 2 express dissent -> a deny Consent, 1 express consent -> permit."""
    if zu8_2 not in ("1", "2"):
        return None
    code, display = DISSENT if zu8_2 == "2" else CONSENT
    consent = {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": ACT_CODE, "code": "INFA"}]}],
        "patient": {"reference": PATIENT_REF}, "dateTime": at,
        "policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTOUT" if zu8_2 == "2" else "OPTIN"}]},
        "provision": {"type": "deny" if zu8_2 == "2" else "permit",
                      "code": [{"coding": [{"system": SNOMED, "code": code, "display": display}]}]},
    }
    return Mapped(consent, f"consent:zu8-2:{patient_key}", updated, patient_ref=PATIENT_REF, where="ZU8-2")


def _merge_request(mrg: Segment, org: str) -> MergeRequest:
    for rep in mrg.repetitions(1):
        value = rep[0].strip() if rep else ""
        authority = rep[3].strip() if len(rep) > 3 else ""
        if value and authority.upper() != "NHS":
            return MergeRequest(PATIENT_REF, f"mrn:{authority or org}|{value}", "MRG-1")
    for rep in mrg.repetitions(1):
        if rep and rep[0].strip():
            return MergeRequest(PATIENT_REF, f"nhs:{nhs_number.normalise(rep[0])}", "MRG-1")
    raise _fail("MRG-1 must name the retired patient record", "MRG", 1, code="101")
