"""Aggregate definitions (what counts towards each measure, age bands, dimensions) and the published tables
(suppression per measure, margins for two-way tables, complete domains)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime

import pytest

from services.record_api.population.aggregates import (
    Tables,
    age_band,
    dimensions_of,
    measures_of,
    parse_dimensions,
    publish,
)
from services.record_api.population.demographics import PersonRow
from services.record_api.population.deprivation import SYNTHETIC_TABLE, DeprivationLookup
from shared.errors import InvalidInput

TODAY = date(2026, 6, 1)


def test_age_bands_on_the_reference_day() -> None:
    assert [age_band(b, TODAY) for b in ("2026-01-01", "2021-06-02", "2021-06-01", "2008-06-01", "1941-06-02",
                                         "1941-06-01", "1900", None, "unknown")] == [
        "0-4", "0-4", "5-17", "18-24", "75-84", "85+", "85+", "unknown", "unknown"]
    assert age_band("1990", TODAY) == "35-44"  # a year alone is taken as mid-year


@pytest.mark.parametrize(("resource_type", "status", "labels", "counts"), [
    ("Encounter", "finished", [], ["encounters"]),
    ("Encounter", "in-progress", [], ["encounters"]),
    ("Encounter", "planned", [], ["waiting_items"]),
    ("Encounter", "cancelled", [], []),
    ("EpisodeOfCare", "active", ["SOC"], ["open_social_care_episodes"]),
    ("EpisodeOfCare", "onhold", ["SOC"], ["open_social_care_episodes"]),
    ("EpisodeOfCare", "waitlist", ["SOC"], ["open_social_care_episodes", "waiting_items"]),
    ("EpisodeOfCare", "finished", ["SOC"], []),
    ("EpisodeOfCare", "active", [], []),  # community (district nursing) episode: not social care
    ("EpisodeOfCare", "waitlist", [], ["waiting_items"]),
    ("ServiceRequest", "active", [], ["waiting_items"]),
    ("ServiceRequest", "on-hold", [], ["waiting_items"]),
    ("ServiceRequest", "completed", [], []),
])
def test_what_each_item_counts_towards(resource_type, status, labels, counts) -> None:
    assert measures_of(resource_type, status, labels) == counts


def test_an_s_flagged_person_has_no_place_in_any_dimension() -> None:
    lookup = DeprivationLookup.from_csv(SYNTHETIC_TABLE)
    row = PersonRow("p", "9990000018", "male", "1990-01-15", "Q", "LS1 4AP", "Y12345", False, False,
                    datetime(2026, 1, 1, tzinfo=UTC))
    assert dimensions_of(row, lookup, TODAY) == {
        "age_band": "35-44", "sex": "male", "ethnic_category": "unknown", "deprivation_decile": "6",
        "postcode_district": "LS1", "lsoa": "E01002542", "gp_practice": "Y12345"}
    hidden = dimensions_of(PersonRow(**{**row.__dict__, "restricted": True}), lookup, TODAY)
    assert {hidden[d] for d in ("deprivation_decile", "postcode_district", "lsoa", "gp_practice")} == {"unknown"}


def test_dimension_names_are_checked() -> None:
    assert parse_dimensions("age_band, sex") == ("age_band", "sex")
    for bad in ("", "age_band,age_band", "a,b,c", "height", "sex,height"):
        with pytest.raises(InvalidInput):
            parse_dimensions(bad)


def _tables(breakdown: tuple[str, ...], cells: dict[tuple[str, ...], dict[str, int]]) -> Tables:
    tables = Tables((breakdown,), {breakdown: {c: Counter(m) for c, m in cells.items()}})
    for cell in cells:
        for name, value in zip(breakdown, cell, strict=True):
            tables.seen[name].add(value)
    return tables


def test_each_measure_is_suppressed_on_its_own_and_domains_are_complete() -> None:
    tables = _tables(("sex",), {("female",): {"persons": 12, "encounters": 2},
                                ("male",): {"persons": 9, "encounters": 30}})
    table = publish(tables, ("sex",), threshold=5)
    persons = {c["sex"]: c["count"] for c in table["measures"]["persons"]["cells"]}
    encounters = {c["sex"]: c["count"] for c in table["measures"]["encounters"]["cells"]}
    assert persons == {"female": 12, "male": 9, "other": 0, "unknown": 0}
    assert encounters == {"female": None, "male": None, "other": 0, "unknown": 0}  # 2, and its partner
    assert table["measures"]["encounters"]["total"] == 32
    assert [v["label"] for v in table["values"]["sex"]] == ["Female", "Male", "Other", "Not stated/unknown"]


def test_two_way_tables_publish_suppressed_margins_and_small_totals_are_hidden() -> None:
    tables = _tables(("postcode_district", "sex"), {("LS1", "female"): {"persons": 2},
                                                    ("LS6", "male"): {"persons": 1}})
    table = publish(tables, ("postcode_district", "sex"), threshold=5)
    persons = table["measures"]["persons"]
    assert persons["total"] is None  # 3 people in all: a small number too
    assert {m["value"]: m["count"] for m in persons["margins"]["postcode_district"]} == {
        "LS1": None, "LS6": None, "unknown": 0}
    assert [v["code"] for v in table["values"]["postcode_district"]] == ["LS1", "LS6", "unknown"]
    assert all(c["count"] in (None, 0) for c in persons["cells"])


def _by(entry: dict, dimension: str) -> dict:
    return {m["value"]: m["count"] for m in entry["margins"][dimension]}


def test_margins_are_suppressed_with_the_cells_so_no_hidden_margin_can_be_derived() -> None:
    # The audit's attack (threshold 10): 0-4 is 5 boys, 5-17 is 12 girls. Margins suppressed on their own hid 0-4
    # and 5-17 but published every 5-17 cell, so 5-17 = 12 and 0-4 = total - the other margins - 12.
    tables = _tables(("age_band", "sex"), {("0-4", "male"): {"persons": 5}, ("5-17", "female"): {"persons": 12},
                                           ("18-24", "female"): {"persons": 10}, ("18-24", "male"): {"persons": 40},
                                           ("25-34", "female"): {"persons": 30}, ("25-34", "male"): {"persons": 30}})
    persons = publish(tables, ("age_band", "sex"), threshold=10)["measures"]["persons"]
    rows: dict[str, dict[str, int | None]] = {}
    for cell in persons["cells"]:
        rows.setdefault(cell["age_band"], {})[cell["sex"]] = cell["count"]
    margins = _by(persons, "age_band")
    for band in rows:  # no age band's margin can be had by adding up its published cells
        assert margins[band] is not None or None in rows[band].values(), band
    hidden_margins = [band for band, count in margins.items() if count is None]
    assert persons["total"] is None or len(hidden_margins) != 1  # nor by subtracting from the total
    sexes = _by(persons, "sex")
    for sex in sexes:
        column = [rows[band][sex] for band in rows]
        assert sum(count is None for count in [*column, sexes[sex]]) != 1, sex


def test_where_a_count_of_persons_is_hidden_their_events_are_hidden_too() -> None:
    # One person alone at practice B86099 with 14 encounters: the encounters would say what that person had.
    tables = _tables(("gp_practice",), {("Y12345",): {"persons": 40, "encounters": 40},
                                        ("B86099",): {"persons": 1, "encounters": 14}})
    measures = publish(tables, ("gp_practice",), threshold=10)["measures"]
    persons = {c["gp_practice"]: c["count"] for c in measures["persons"]["cells"]}
    encounters = {c["gp_practice"]: c["count"] for c in measures["encounters"]["cells"]}
    waiting = {c["gp_practice"]: c["count"] for c in measures["waiting_items"]["cells"]}
    assert persons["B86099"] is None and encounters["B86099"] is None
    assert waiting["B86099"] is None  # "none of the hidden few is waiting" is about them too
    for measure in measures.values():
        cells = [c["count"] for c in measure["cells"]]
        assert sum(count is None for count in [*cells, measure["total"]]) != 1
