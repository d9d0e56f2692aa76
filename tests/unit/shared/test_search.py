from datetime import UTC, datetime

from shared.search import SearchRow, date_bounds, extract, normalise_text


def test_patient_rows() -> None:
    rows = extract({
        "resourceType": "Patient", "id": "p1",
        "identifier": [{"system": "http://fhir.nhs.net/Id/nhs-number", "value": "9990000018"},
                       {"system": "https://fhir.rr8.nhs.uk/Id/mrn", "value": "MRN123"}],
        "name": [{"family": "O'Brién", "given": ["Siân", "Mary"]}],
        "gender": "female", "birthDate": "1980-05-01",
        "address": [{"postalCode": "LS1 4AP"}],
        "generalPractitioner": [{"reference": "Organization/Y12345"}],
    })
    assert SearchRow("identifier", system="https://fhir.nhs.uk/Id/nhs-number", code="9990000018") in rows
    assert SearchRow("identifier", system="https://fhir.rr8.nhs.uk/Id/mrn", code="MRN123") in rows
    assert SearchRow("family", text="o'brien", code="O'Brién") in rows
    assert SearchRow("given", text="sian", code="Siân") in rows
    assert SearchRow("address-postalcode", text="ls14ap", code="LS1 4AP") in rows
    assert SearchRow("gender", code="female") in rows
    assert SearchRow("general-practitioner", ref_type="Organization", ref_id="Y12345") in rows
    birth = next(r for r in rows if r.param == "birthdate")
    assert birth.date_low == datetime(1980, 5, 1, tzinfo=UTC)
    assert birth.date_high.date() == birth.date_low.date()


def test_clinical_rows_index_subject_as_patient_and_choice_dates() -> None:
    rows = extract({
        "resourceType": "Observation", "status": "final",
        "subject": {"reference": "Patient/abc"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "271649006"}]},
        "effectiveDateTime": "2024-03-05T10:15:00+01:00",
    })
    assert SearchRow("patient", ref_type="Patient", ref_id="abc") in rows
    assert SearchRow("subject", ref_type="Patient", ref_id="abc") in rows
    assert SearchRow("code", system="http://snomed.info/sct", code="271649006") in rows
    date = next(r for r in rows if r.param == "date")
    assert date.date_low == datetime(2024, 3, 5, 9, 15, tzinfo=UTC)


def test_period_and_open_ended_period() -> None:
    rows = extract({"resourceType": "Encounter", "status": "in-progress", "class": {"code": "IMP"},
                    "period": {"start": "2024-01-01"}})
    date = next(r for r in rows if r.param == "date")
    assert date.date_low == datetime(2024, 1, 1, tzinfo=UTC)
    assert date.date_high.year == 9999


def test_partial_dates_cover_their_whole_span() -> None:
    low, high = date_bounds("2024-02")
    assert (low.day, high.day, high.month) == (1, 29, 2)
    assert date_bounds("not a date") == (None, None)
    assert date_bounds("2024-02-30") == (None, None)


def test_text_normalisation_folds_case_accents_and_spaces() -> None:
    assert normalise_text("  ZOË   Smith ") == "zoe smith"


def test_unknown_types_and_odd_shapes_index_nothing_and_never_raise() -> None:
    assert extract({"resourceType": "Basic"}) == []
    assert extract({"resourceType": "Patient", "name": "not a list", "identifier": [None, 3, {"value": 5}]}) == [
        SearchRow("identifier", system=None, code="5")]


def test_dates_at_the_ends_of_the_calendar_are_clamped_not_overflowed() -> None:
    latest, earliest = datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC)
    assert date_bounds("9999-12-31") == (datetime(9999, 12, 31, tzinfo=UTC), latest)
    assert date_bounds("9999") == (datetime(9999, 1, 1, tzinfo=UTC), latest)
    assert date_bounds("9999-12-31T23:59:59Z") == (latest.replace(microsecond=0), latest)
    assert date_bounds("9999-12-31T23:30:00-01:00") == (latest, latest)  # past the end in UTC
    assert date_bounds("0001-01-01T00:30:00+01:00") == (earliest, earliest)  # before the start in UTC
    assert date_bounds("2025-06-10T10:00:00+25:00") == (None, None)  # still no offset


def test_a_record_dated_at_the_end_of_the_calendar_is_indexed() -> None:
    rows = extract({"resourceType": "Condition", "subject": {"reference": "Patient/abc"},
                    "recordedDate": "9999-12-31", "onsetPeriod": {"start": "0001-01-01T00:30:00+01:00"}})
    dates = sorted((r.date_low, r.date_high) for r in rows if r.param == "date")
    assert dates == [(datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)),
                     (datetime(9999, 12, 31, tzinfo=UTC), datetime.max.replace(tzinfo=UTC))]
