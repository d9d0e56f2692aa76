"""The HL7 v2 ADT adapter on NHS ITK-style messages: every supported event, the NHS conventions, and the
segment and field named for each kind of bad message."""

import pytest

from services.ingest.feeds import hl7v2
from services.ingest.feeds.hl7v2_message import build_ack, fhir_datetime, parse, parse_ts
from services.ingest.feeds.model import AdapterError
from shared.fhir import NHS_NUMBER_SYSTEM, NHS_VERIFICATION_ENGLAND, ODS_ORG_SYSTEM
from shared.search import extract
from tests.fixtures.ingest import messages
from tests.support import data


def _by_type(mapped):
    result = {}
    for item in mapped.items:
        result.setdefault(item.resource_type, []).append(item)
    return result


def test_a_full_itk_admission_maps_to_uk_core_resources() -> None:
    mapped = hl7v2.map_adt(messages.text("adt_a01_itk.hl7"))
    found = _by_type(mapped)
    assert sorted(found) == ["AllergyIntolerance", "Condition", "Consent", "Encounter", "Patient", "RelatedPerson"]
    assert (mapped.source_org, mapped.source_system) == ("RR8", "PAS")
    patient = found["Patient"][0]
    nhs = patient.resource["identifier"][0]
    assert nhs["system"] == NHS_NUMBER_SYSTEM and nhs["value"] == data.NHS_NUMBERS[0]
    assert nhs["extension"][0]["valueCodeableConcept"]["coding"][0] == {"system": NHS_VERIFICATION_ENGLAND,
                                                                         "code": "01"}
    assert patient.resource["gender"] == "female" and patient.resource["birthDate"] == "1980-01-01"
    assert patient.resource["generalPractitioner"][0]["identifier"] == {"system": ODS_ORG_SYSTEM,
                                                                        "value": data.GP_ODS}
    assert patient.resource["address"][0]["postalCode"] == "LS1 4AB"
    assert patient.source_key == "mrn:RR8|RR8000123" and patient.restricted  # ZU8-4 = 2: national S-flag
    encounter = found["Encounter"][0].resource
    assert encounter["status"] == "in-progress" and encounter["class"]["code"] == "IMP"
    assert encounter["period"]["start"] == "2024-03-01T10:15:00+00:00"
    assert encounter["location"][0]["location"]["display"] == "WARD01 BAY2 BED3"
    assert found["Encounter"][0].source_key == "visit:V2024000123"
    allergies = {a.resource["code"]["coding"][0]["code"]: a.resource for a in found["AllergyIntolerance"]}
    assert allergies["N0000147997"]["criticality"] == "high" and allergies["N0000147997"]["category"] == ["medication"]
    assert allergies["227493005"]["code"]["coding"][0]["system"] == "http://snomed.info/sct"
    conditions = {c.resource["code"]["coding"][0]["code"]: c for c in found["Condition"]}
    assert conditions["J18.9"].resource["code"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-10"
    assert conditions["J18.9"].resource["encounter"] == {"reference": hl7v2.ENCOUNTER_REF}
    assert conditions["B20"].confidential and not conditions["J18.9"].confidential  # DG1-18 = Y
    consent = found["Consent"][0].resource
    assert consent["provision"]["type"] == "deny"
    assert consent["provision"]["code"][0]["coding"][0]["code"] == "416409005"
    kin = found["RelatedPerson"][0].resource
    assert kin["relationship"][0]["coding"][0]["code"] == "SPO" and kin["name"][0]["family"] == "ORANGE"


@pytest.mark.parametrize("sex, gender", [("1", "male"), ("M", "male"), ("2", "female"), ("F", "female"),
                                         ("9", "unknown"), ("U", "unknown"), ("0", "unknown")])
def test_sex_is_read_in_both_the_itk_digits_and_the_letters(sex: str, gender: str) -> None:
    patient = hl7v2.map_adt(messages.adt("A28", sex=sex)).patients[0].resource
    assert patient["gender"] == gender


@pytest.mark.parametrize("status", [f"NSTS0{n}" for n in range(1, 9)])
def test_pid32_tracing_status_becomes_the_uk_core_verification_extension(status: str) -> None:
    patient = hl7v2.map_adt(messages.adt("A28", nsts=status)).patients[0].resource
    coding = patient["identifier"][0]["extension"][0]["valueCodeableConcept"]["coding"][0]
    assert coding == {"system": NHS_VERIFICATION_ENGLAND, "code": status[4:]}


@pytest.mark.parametrize("kind", ["NH", "HN", ""])
def test_the_nhs_number_is_found_by_assigning_authority_whatever_the_identifier_type(kind: str) -> None:
    patient = hl7v2.map_adt(messages.adt("A31", nhs_type=kind)).patients[0].resource
    assert patient["identifier"][0] == patient["identifier"][0] | {"system": NHS_NUMBER_SYSTEM,
                                                                   "value": data.NHS_NUMBERS[0]}


@pytest.mark.parametrize("event, status", [("A01", "in-progress"), ("A04", "in-progress"), ("A05", "planned"),
                                           ("A08", "in-progress"), ("A02", "in-progress"), ("A13", "in-progress"),
                                           ("A11", "cancelled")])
def test_each_encounter_event_maps_to_an_encounter(event: str, status: str) -> None:
    mapped = hl7v2.map_adt(messages.adt(event))
    encounter = _by_type(mapped)["Encounter"][0]
    assert encounter.resource["status"] == status and encounter.merge is not None


def test_discharge_sets_the_end_of_the_visit() -> None:
    mapped = hl7v2.map_adt(messages.adt("A03", discharged="20240305143000"))
    encounter = _by_type(mapped)["Encounter"][0].resource
    assert encounter["status"] == "finished" and encounter["period"]["end"] == "2024-03-05T14:30:00+00:00"


def test_a_cancel_transfer_maps_to_the_encounter_it_cancels() -> None:
    mapped = hl7v2.map_adt(messages.adt("A12", ward="WARD01^BAY2^BED3"))
    assert _by_type(mapped)["Encounter"][0].source_key == "visit:V2024000123"


@pytest.mark.parametrize("event", ["A28", "A31"])
def test_patient_events_carry_no_encounter(event: str) -> None:
    assert sorted(_by_type(hl7v2.map_adt(messages.adt(event)))) == ["Patient"]


def test_an_a40_names_the_retired_record_from_mrg1() -> None:
    mapped = hl7v2.map_adt(messages.adt("A40", mrg="RR8000999^^^RR8^MR"))
    assert mapped.merge is not None and mapped.merge.retired_source_key == "mrn:RR8|RR8000999"


def test_british_summer_time_is_converted_to_utc() -> None:
    assert parse_ts("20240701120000").isoformat() == "2024-07-01T11:00:00+00:00"
    assert parse_ts("20240101120000").isoformat() == "2024-01-01T12:00:00+00:00"
    assert parse_ts("20240701120000+0000").isoformat() == "2024-07-01T12:00:00+00:00"


@pytest.mark.parametrize("sent, fhir", [
    ("20240615", "2024-06-15"), ("202406", "2024-06"), ("2024", "2024"),  # dates keep their precision
    ("202406151030", "2024-06-15T09:30:00+00:00"), ("20240615103000", "2024-06-15T09:30:00+00:00"),
    ("20240615103000+0000", "2024-06-15T10:30:00+00:00"), ("20240115103000", "2024-01-15T10:30:00+00:00"),
    ("20240631", None), ("2024-06-15", None),
])
def test_hl7_timestamps_become_fhir_datetimes_at_the_precision_sent(sent: str, fhir: str | None) -> None:
    assert fhir_datetime(sent) == fhir


def test_a_date_only_value_in_british_summer_time_stays_on_its_day() -> None:
    message = messages.with_field(messages.adt("A01", ts="20240615120000", admitted="20240615"), "PID", 29,
                                  "20240615")
    message += "DG1|1||I21.9^Acute myocardial infarction^I10||20240615|F\r"
    found = _by_type(hl7v2.map_adt(message))
    assert found["Patient"][0].resource["deceasedDateTime"] == "2024-06-15"
    assert found["Encounter"][0].resource["period"]["start"] == "2024-06-15"
    condition = found["Condition"][0].resource
    assert condition["recordedDate"] == "2024-06-15"
    (indexed,) = [row for row in extract(condition) if row.param == "date"]
    assert (indexed.date_low.isoformat(), indexed.date_high.date().isoformat()) == ("2024-06-15T00:00:00+00:00",
                                                                                    "2024-06-15")


@pytest.mark.parametrize("message, location, code", [
    (messages.adt("A01", nhs=data.INVALID_NHS_NUMBER), ("PID", 3, 1), "102"),
    (messages.adt("A01", dob="19801301"), ("PID", 7, 0), "102"),
    (messages.adt("A01", sex="X"), ("PID", 8, 0), "103"),
    (messages.adt("A01", nsts="NSTS11"), ("PID", 32, 0), "103"),
    (messages.adt("A01", visit=""), ("PV1", 19, 0), "101"),
    (messages.adt("A01", patient_class="Q"), ("PV1", 2, 0), "103"),
    (messages.adt("A03", discharged="2024-03-05"), ("PV1", 45, 0), "102"),
    (messages.adt("A40"), ("MRG", 0, 0), "100"),
    (messages.adt("A01").replace("ADT^A01^ADT_A01", "ORU^R01^ORU_R01"), ("MSH", 9, 1), "200"),
    (messages.adt("A01").replace("ADT^A01^ADT_A01", "ADT^A17^ADT_A17").replace("EVN|A01", "EVN|A17"),
     ("MSH", 9, 2), "201"),
    (messages.adt("A01").replace("|MSG00001|", "||"), ("MSH", 10, 0), "101"),
    (messages.adt("A01").replace("|20240301101500||ADT", "|yesterday||ADT"), ("MSH", 7, 0), "102"),
    ("\r".join(line for line in messages.adt("A01").split("\r") if not line.startswith("PID")), ("PID", 0, 0),
     "100"),
])
def test_bad_messages_name_the_segment_and_field_at_fault(message: str, location, code: str) -> None:
    with pytest.raises(AdapterError) as caught:
        hl7v2.map_adt(message)
    assert caught.value.hl7_location == location
    assert caught.value.hl7_code == code
    assert caught.value.issues and caught.value.issues[0].diagnostics


@pytest.mark.parametrize("garbage", ["", "hello", "MSH", "PID|1||123", "MSH|^~\\&|PAS|RR8\rFOO|bar\r", "\x00\x01"])
def test_text_that_is_not_hl7_is_rejected_not_crashed_on(garbage: str) -> None:
    with pytest.raises(AdapterError) as caught:
        hl7v2.map_adt(garbage)
    assert caught.value.hl7_code in ("100", "101", "200")


def test_escape_sequences_are_decoded() -> None:
    message = messages.adt("A28", family="O\\S\\BRIEN", given="Mary\\T\\Jo")
    name = hl7v2.map_adt(message).patients[0].resource["name"][0]
    assert name["family"] == "O^BRIEN" and name["given"] == ["Mary&Jo"]


def test_acks_carry_the_control_id_and_for_errors_an_err_segment_with_the_location() -> None:
    text = messages.adt("A01", control="CTRL-77")
    ok = parse(build_ack(text, "AA"))
    assert ok.first("MSA").get(1) == "AA" and ok.first("MSA").get(2) == "CTRL-77"
    error = parse(build_ack(text, "AE", "NHS number fails the Modulus 11 check digit", ("PID", 3, 1), "102"))
    assert error.first("MSA").get(1) == "AE" and error.first("MSA").get(2) == "CTRL-77"
    err = error.first("ERR")
    assert [err.get(1, 1), err.get(1, 2), err.get(1, 3)] == ["PID", "1", "3"]
    assert [err.get(2, 1), err.get(2, 3)] == ["PID", "3"] and err.get(3, 1) == "102"
    assert "Modulus 11" in error.first("MSA").get(3)


def test_an_aa_carries_an_err_only_as_a_warning() -> None:
    text = messages.adt("A01", control="CTRL-78")
    assert "\rERR|" not in build_ack(text, "AA", "duplicate of a message already processed")
    ack = build_ack(text, "AA", "MSH-7 is ahead", ("MSH", 7, 0), "0", severity="W")
    msa, err = ack.split("\r")[1:3]
    assert msa == "MSA|AA|CTRL-78|MSH-7 is ahead"
    assert err == "ERR|MSH^1^7^0&Message accepted&HL70357|MSH^1^7^1|0^Message accepted^HL70357|W||||MSH-7 is ahead"


NULL = '""'  # the HL7 null: delete the value


@pytest.mark.parametrize("segment, number, element", [
    ("PID", 7, "birthDate"), ("PID", 8, "gender"), ("PID", 13, "telecom"), ("PID", 22, "extension"),
    ("PID", 29, "deceasedDateTime"),
])
def test_the_hl7_null_leaves_the_patient_element_out(segment: str, number: int, element: str) -> None:
    message = messages.with_field(messages.adt("A01"), segment, number, NULL)
    patient = hl7v2.map_adt(message).patients[0].resource
    assert element not in patient
    assert NULL not in str(patient)


def test_the_hl7_null_leaves_the_encounter_times_and_discharge_method_out() -> None:
    message = messages.adt("A13", ts="20240305170000", admitted=NULL, discharged=NULL)
    encounter = _by_type(hl7v2.map_adt(messages.with_field(message, "PV1", 36, NULL)))["Encounter"][0].resource
    assert encounter["status"] == "in-progress" and "end" not in encounter.get("period", {})
    assert "hospitalization" not in encounter and NULL not in str(encounter)


def test_the_hl7_null_in_pv1_36_deletes_the_stored_discharge_method() -> None:
    discharge = messages.with_field(messages.adt("A03", discharged="20240305160000"), "PV1", 36, "19")
    correction = messages.with_field(messages.adt("A08", ts="20240305170000"), "PV1", 36, NULL)
    stored = _by_type(hl7v2.map_adt(discharge))["Encounter"][0].resource
    assert stored["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] == "19"
    update = _by_type(hl7v2.map_adt(correction))["Encounter"][0]
    assert "hospitalization" not in update.merge(stored)


def test_an_empty_pv1_36_keeps_the_stored_discharge_method() -> None:
    discharge = messages.with_field(messages.adt("A03", discharged="20240305160000"), "PV1", 36, "19")
    stored = _by_type(hl7v2.map_adt(discharge))["Encounter"][0].resource
    update = _by_type(hl7v2.map_adt(messages.adt("A08", ts="20240305170000")))["Encounter"][0]
    assert update.merge(stored)["hospitalization"] == stored["hospitalization"]


def test_the_hl7_null_reads_as_no_value_in_any_component() -> None:
    pid = parse(messages.with_field(messages.adt("A28"), "PID", 5, 'ORANGE^""^^^Ms')).first("PID")
    assert pid.repetitions(5)[0][:2] == ["ORANGE", ""] and pid.get(5, 2) == "" and not pid.is_null(5)
    assert parse(messages.with_field(messages.adt("A28"), "PID", 5, NULL)).first("PID").is_null(5)


@pytest.mark.parametrize("zu8, restricted", [
    (None, None),  # no ZU8: says nothing, the stored S-flag stands
    ("|1|No|", None),  # ZU8-4 empty: likewise
    ("|1|No|2", True),  # the national S-flag
    ("|1|No|1", False),  # local hiding only: the national S-flag is lifted
    ('|1|No|""', False),  # deleted
])
def test_zu8_4_sets_or_lifts_the_s_flag_only_when_sent(zu8: str | None, restricted: bool | None) -> None:
    assert hl7v2.map_adt(messages.adt("A02", zu8=zu8)).patients[0].restricted is restricted


def test_pid_13_and_14_map_use_and_equipment_type_to_contact_points() -> None:
    home = "0113 496 0123~07700 900123^PRN^CP~^NET^Internet^mary@example.com~0113 496 0999^ORN^FX"
    message = messages.with_field(messages.with_field(messages.adt("A28"), "PID", 13, home), "PID", 14,
                                  "0113 496 0555^WPN^PH~^NET^X.400^m.orange@example.nhs.uk")
    assert hl7v2.map_adt(message).patients[0].resource["telecom"] == [
        {"system": "phone", "value": "0113 496 0123", "use": "home"},  # no XTN-2: PID-13 is the home number
        {"system": "phone", "value": "07700 900123", "use": "mobile"},
        {"system": "email", "value": "mary@example.com", "use": "home"},
        {"system": "fax", "value": "0113 496 0999", "use": "home"},
        {"system": "phone", "value": "0113 496 0555", "use": "work"},
        {"system": "email", "value": "m.orange@example.nhs.uk", "use": "work"},
    ]


def test_next_of_kin_phones_are_read_the_same_way() -> None:
    nk1 = "NK1|1|ORANGE^Peter^^^Mr|SPO^Spouse||07700 900124^PRS^CP~^NET^Internet^peter@example.com|0113 496 0556"
    kin = _by_type(hl7v2.map_adt(messages.adt("A01", segments=(nk1,))))["RelatedPerson"][0].resource
    assert kin["telecom"] == [{"system": "phone", "value": "07700 900124", "use": "mobile"},
                              {"system": "email", "value": "peter@example.com"},
                              {"system": "phone", "value": "0113 496 0556", "use": "work"}]


@pytest.mark.parametrize("name_type, use", [("L", "official"), ("", "official"), ("M", "maiden"), ("N", "nickname"),
                                            ("D", "usual"), ("A", "usual"), ("NOUSE", "old"), ("TEMP", "temp"),
                                            ("S", "anonymous"), ("B", None), ("P", None)])
def test_xpn_7_name_type_maps_to_the_name_use(name_type: str, use: str | None) -> None:
    sent = f"ORANGE^Blossom^^^Mrs^^L~SMITH^Blossom^^^Miss^^{name_type}"
    names = messages.with_field(messages.adt("A28"), "PID", 5, sent)
    second = hl7v2.map_adt(names).patients[0].resource["name"][1]
    assert second.get("use") == use and second["family"] == "SMITH"
