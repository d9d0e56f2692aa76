"""A small ICS population for the export tests: people fed by every kind of source, with every reason a person
or an item must stay out of secondary use, so one export can be searched for each of them."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.integration.population.conftest import RECIPIENT_ODS, Consents
from tests.support import data
from tests.support.record_store import RecordStore, Scenario, condition, encounter, episode_of_care

N = data.NHS_NUMBERS


@dataclass
class World:
    included: dict[str, Scenario] = field(default_factory=dict)  # who must appear
    excluded: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # why -> (person id, NHS number)
    excluded_resources: dict[str, tuple[str, str]] = field(default_factory=dict)  # why -> (type, id)
    restricted_person: str = ""
    restricted_encounter: str = ""
    soc_withheld_person: str = ""
    denied_recipient_person: tuple[str, str] = ("", "")


def build(store: RecordStore, consents: Consents) -> World:
    world = World()
    olivia = Scenario.build(store, N[0])  # GP, acute, community and social care; HIV and sealed items
    world.included["olivia"] = olivia
    world.excluded_resources["HIV-labelled condition"] = ("Condition", olivia.ids["hiv"])
    world.excluded_resources["sealed (V) condition"] = ("Condition", olivia.ids["sealed"])
    psy = store.clinical(olivia.person, condition("35489007", "Depressive disorder"), labels=("PSY",),
                         org=data.GP_ODS, system="EMIS")
    world.excluded_resources["PSY-labelled condition"] = ("Condition", psy)

    opted_out = Scenario.build(store, N[1])
    consents.preferences(N[1], opt_out=True)
    world.excluded["national data opt-out"] = (opted_out.person, N[1])

    objector = Scenario.build(store, N[2])
    consents.preferences(N[2], direct_care="object")
    world.excluded["citizen objection"] = (objector.person, N[2])

    dissent = _simple_person(store, N[3])
    consents.gp_dissent(N[3])
    world.excluded["GP-recorded dissent"] = (dissent, N[3])

    denies_recipient = _simple_person(store, N[4])
    consents.preferences(N[4], denied=(RECIPIENT_ODS,))
    world.excluded["denied the recipient's organisation"] = (denies_recipient, N[4])
    world.denied_recipient_person = (denies_recipient, N[4])

    world.soc_withheld_person = _simple_person(store, N[5], social_care=True)
    consents.preferences(N[5], withheld=("SOC",))

    world.restricted_person = store.person(N[6])
    store.source_patient(world.restricted_person, org=data.GP_ODS, system="EMIS", nhs_number=N[6], family="Hidden",
                         postcode="LS6 2QT", gp_ods=data.GP_ODS, labels=("R",),
                         local_id=("https://emis.example/Id/patient", "E-R1"))
    world.restricted_encounter = store.clinical(world.restricted_person, encounter("2025-08-01T10:00:00Z"),
                                                org=data.ACUTE_ODS, system="PAS")

    # A person who opted out and was later merged into a record with no NHS number: the survivor is excluded.
    retired = _simple_person(store, N[7])
    survivor = store.person(None)
    store.source_patient(survivor, org=data.ACUTE_ODS, system="PAS", family="Merged", nhs_number=None,
                         local_id=("https://fhir.rr8.nhs.uk/Id/mrn", "MRN-SURVIVOR"))
    store.clinical(survivor, encounter("2025-09-01T10:00:00Z"), org=data.ACUTE_ODS, system="PAS")
    consents.preferences(N[7], opt_out=True)
    store.merge(retired, survivor)
    world.excluded["opted out, then merged"] = (survivor, None)

    # A person whose NHS number is not verified yet (so the person has none) but who opted out under it.
    unverified = store.person(None)
    store.source_patient(unverified, org=data.COMMUNITY_ODS, system="SystmOne", nhs_number=N[8], verified=False,
                         local_id=("https://fhir.ry6.nhs.uk/Id/local", "C-UNVERIFIED"))
    store.clinical(unverified, encounter("2025-10-01T10:00:00Z", location=False), org=data.COMMUNITY_ODS,
                   system="SystmOne")
    consents.preferences(N[8], opt_out=True)
    world.excluded["opted out under an unverified number"] = (unverified, None)
    return world


def _simple_person(store: RecordStore, nhs: str, social_care: bool = False) -> str:
    person = store.person(nhs)
    store.source_patient(person, org=data.GP_ODS, system="EMIS", nhs_number=nhs, family="Jones", given="Amir",
                         postcode="LS6 2QT", gp_ods=data.GP_ODS, local_id=("https://emis.example/Id/patient",
                                                                             f"E-{nhs}"))
    store.clinical(person, encounter("2025-05-01T10:00:00Z"), org=data.ACUTE_ODS, system="PAS")
    if social_care:
        store.clinical(person, episode_of_care(), labels=("SOC",), org=data.SOCIAL_CARE_ODS, system="Mosaic")
    return person
