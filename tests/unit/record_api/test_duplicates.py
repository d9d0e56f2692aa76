"""Clinical duplicates: grouped by a shared coded concept (transitively), shown once with every source."""

from datetime import UTC, datetime

from services.record_api.duplicates import ALSO_RECORDED_BY, attach_sources, group
from services.record_api.store import CensusRow

SCT = "http://snomed.info/sct"
DMD = "https://dmd.nhs.uk"


def _row(rtype: str, rid: str, org: str) -> CensusRow:
    return CensusRow(rtype, rid, datetime(2026, 1, 1, tzinfo=UTC), org, (), "p1")


def test_the_same_concept_from_two_sources_is_one_group_led_by_the_first_in_order() -> None:
    rows = [_row("AllergyIntolerance", "a-acute", "RR8"), _row("AllergyIntolerance", "a-gp", "Y12345"),
            _row("AllergyIntolerance", "other", "Y12345")]
    index = [("AllergyIntolerance", "a-gp", "code", SCT, "91936005", None),
             ("AllergyIntolerance", "a-acute", "code", SCT, "91936005", None),
             ("AllergyIntolerance", "other", "code", SCT, "300916003", None)]
    groups = group(rows, index)
    assert groups.folded == {("AllergyIntolerance", "a-gp")}
    assert [r.id for r in groups.others[("AllergyIntolerance", "a-acute")]] == ["a-gp"]


def test_equivalence_is_transitive_across_code_systems() -> None:
    rows = [_row("MedicationStatement", m, o) for m, o in (("m1", "Y12345"), ("m2", "RR8"), ("m3", "A1B2C"))]
    index = [("MedicationStatement", "m1", "code", SCT, "322236009", None),
             ("MedicationStatement", "m1", "code", DMD, "42109611000001109", None),
             ("MedicationStatement", "m2", "code", SCT, "322236009", None),
             ("MedicationStatement", "m3", "code", DMD, "42109611000001109", None)]
    groups = group(rows, index)
    assert groups.folded == {("MedicationStatement", "m2"), ("MedicationStatement", "m3")}


def test_types_do_not_mix_and_immunisations_need_the_same_day() -> None:
    rows = [_row("Condition", "c1", "Y12345"), _row("AllergyIntolerance", "a1", "RR8"),
            _row("Immunization", "i1", "Y12345"), _row("Immunization", "i2", "RR8"),
            _row("Immunization", "i3", "RY6")]
    day = datetime(2025, 10, 1, 9, tzinfo=UTC)
    index = [("Condition", "c1", "code", SCT, "91936005", None), ("AllergyIntolerance", "a1", "code", SCT,
                                                                  "91936005", None),
             ("Immunization", "i1", "vaccine-code", SCT, "39114911000001105", None),
             ("Immunization", "i1", "date", None, None, day),
             ("Immunization", "i2", "vaccine-code", SCT, "39114911000001105", None),
             ("Immunization", "i2", "date", None, None, day.replace(hour=15)),
             ("Immunization", "i3", "vaccine-code", SCT, "39114911000001105", None),
             ("Immunization", "i3", "date", None, None, datetime(2024, 10, 1, tzinfo=UTC))]
    groups = group(rows, index)
    assert groups.folded == {("Immunization", "i2")}  # same vaccine, same day; last year's dose stands alone


def test_attached_sources_name_each_other_record_and_its_origin() -> None:
    other = _row("AllergyIntolerance", "a-gp", "Y12345")
    body = {"resourceType": "AllergyIntolerance", "id": "a-acute", "extension": [{"url": "keep-me"}]}
    shown = attach_sources(body, [other], {("AllergyIntolerance", "a-gp"): "urn:scr:ods:Y12345:EMIS"})
    assert shown["extension"][0] == {"url": "keep-me"}
    attached = shown["extension"][1]
    assert attached["url"] == ALSO_RECORDED_BY
    assert {"url": "source", "valueUri": "urn:scr:ods:Y12345:EMIS"} in attached["extension"]
    assert {"url": "record", "valueReference": {"reference": "AllergyIntolerance/a-gp"}} in attached["extension"]
    assert "extension" not in body or body["extension"] == [{"url": "keep-me"}]  # the stored body is untouched
