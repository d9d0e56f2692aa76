"""Patient/$everything: the unified view across GP, acute, community and social care, each entry showing its
source; clinical duplicates across sources shown once with every source attached; _since, _type, _count paging."""

from __future__ import annotations

import pytest

from services.record_api.duplicates import ALSO_RECORDED_BY
from tests.integration.record_api.helpers import ids, resources, says_items_withheld, source_orgs
from tests.support import data
from tests.support.record_store import allergy

pytestmark = pytest.mark.integration


def _links(body: dict) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in body["link"]}


def _also(resource: dict) -> list[dict[str, object]]:
    found = []
    for extension in resource.get("extension", []):
        if extension["url"] == ALSO_RECORDED_BY:
            found.append({part["url"]: next(v for k, v in part.items() if k.startswith("value"))
                          for part in extension["extension"]})
    return found


def test_everything_is_one_view_across_every_source(api, scenario, callers) -> None:
    body = api.get(f"/fhir/Patient/{scenario.person}/$everything", headers=callers.acute()).json()
    found = resources(body)
    assert found[0]["resourceType"] == "Patient" and found[0]["id"] == scenario.person
    organisations = set().union(*(source_orgs(r) for r in found[1:]))
    assert organisations == {data.GP_ODS, data.ACUTE_ODS, data.COMMUNITY_ODS, data.SOCIAL_CARE_ODS}
    for resource in found[1:]:
        assert resource["meta"]["source"].startswith("urn:scr:ods:")  # where it came from, on every entry
        assert len(source_orgs(resource)) == 1
    assert not {r["resourceType"] for r in found} & {"Consent", "Provenance"}
    assert scenario.withheld_by_default.isdisjoint(ids(body)) and says_items_withheld(body)
    # total counts what is presented: the person, and the clinical entries once each
    assert body["total"] == len(found)


def test_the_same_allergy_and_medication_from_gp_and_hospital_appear_once_with_both_sources(api, scenario,
                                                                                           callers) -> None:
    body = api.get(f"/fhir/Patient/{scenario.person}/$everything", headers=callers.acute()).json()
    allergies = [r for r in resources(body) if r["resourceType"] == "AllergyIntolerance"]
    meds = [r for r in resources(body) if r["resourceType"] == "MedicationStatement"]
    assert len(allergies) == 1 and len(meds) == 1
    for shown, pair in ((allergies[0], ("allergy_gp", "allergy_acute")), (meds[0], ("med_gp", "med_acute"))):
        other = next(scenario.ids[k] for k in pair if scenario.ids[k] != shown["id"])
        assert shown["id"] in {scenario.ids[k] for k in pair}
        attached = _also(shown)
        assert len(attached) == 1
        assert attached[0]["record"] == {"reference": f"{shown['resourceType']}/{other}"}
        assert {source_orgs(shown).pop(), attached[0]["organization"]["value"]} == {data.GP_ODS, data.ACUTE_ODS}
        assert str(attached[0]["source"]).startswith("urn:scr:ods:")
    # Different concepts are not folded together, and plain searches still return each source's record.
    searched = api.get(f"/fhir/AllergyIntolerance?patient={scenario.person}", headers=callers.acute()).json()
    assert ids(searched) == {scenario.ids["allergy_gp"], scenario.ids["allergy_acute"]}


def test_a_withheld_duplicate_is_not_revealed_as_an_attached_source(api, scenario, record_store, callers) -> None:
    record_store.clinical(scenario.person, allergy("300916003", "Latex allergy"), org=data.GP_ODS, system="EMIS",
                          labels=("V",))
    record_store.clinical(scenario.person, allergy("300916003", "Latex allergy"), org=data.ACUTE_ODS, system="PAS")
    body = api.get(f"/fhir/Patient/{scenario.person}/$everything", headers=callers.acute()).json()
    latex = [r for r in resources(body) if r["resourceType"] == "AllergyIntolerance"
             and r["code"]["coding"][0]["code"] == "300916003"]
    assert len(latex) == 1 and _also(latex[0]) == []


def test_the_total_counts_the_patient_only_when_one_is_returned(api, scenario, record_store, callers,
                                                                  pdp) -> None:
    """An objection leaves a trust only what it recorded: with no source Patient of its own it gets no Patient,
    so the total is its one encounter, on every page."""
    from tests.support.record_store import encounter

    own = record_store.clinical(scenario.person, encounter("2025-08-01T10:00:00Z"), org=data.OTHER_TRUST_ODS,
                                system="Lorenzo")
    pdp.objections.add(scenario.nhs_number)
    url = f"/fhir/Patient/{scenario.person}/$everything"
    body = api.get(url, headers=callers.stranger()).json()
    assert [r["id"] for r in resources(body)] == [own] and body["total"] == 1
    paged = api.get(f"{url}?_count=1", headers=callers.stranger()).json()
    assert paged["total"] == 1 and "next" not in _links(paged)


def test_type_since_and_count_paging(api, scenario, callers) -> None:
    url = f"/fhir/Patient/{scenario.person}/$everything"
    only = api.get(f"{url}?_type=Observation,Encounter", headers=callers.acute()).json()
    assert {r["resourceType"] for r in resources(only)} == {"Patient", "Observation", "Encounter"}
    since = api.get(f"{url}?_since=2026-01-05T09:13:30Z", headers=callers.acute()).json()
    assert {r["resourceType"] for r in resources(since)[1:]} == {"Encounter", "EpisodeOfCare"}
    first = api.get(f"{url}?_count=2", headers=callers.acute()).json()
    pages = [first]
    while "next" in _links(pages[-1]):
        pages.append(api.get(_links(pages[-1])["next"], headers=callers.acute()).json())
    seen = [r["id"] for page in pages for r in resources(page)]
    everything_at_once = api.get(url, headers=callers.acute()).json()
    assert seen == [r["id"] for r in resources(everything_at_once)]
    assert len(pages) >= 4 and all(len(resources(p)) <= 3 for p in pages)
    assert api.get(f"{url}?_type=NotAType", headers=callers.acute()).status_code == 400
    assert api.get(f"{url}?_since=last-tuesday", headers=callers.acute()).status_code == 400
    assert api.get(f"{url}?colour=red", headers=callers.acute() | {"Prefer": "handling=strict"}).status_code == 400
    assert api.get("/fhir/Patient/nobody/$everything", headers=callers.acute()).status_code == 404
