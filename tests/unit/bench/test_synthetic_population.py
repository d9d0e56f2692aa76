"""The synthetic ICS population the benchmark ingests: deterministic for a seed, sized by one number, and every
input it emits is one the feeds accept, with the mix the benchmark claims (sensitive items, objections and
opt-outs, people without NHS numbers, near-duplicates, long records)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

from services.consent import preferences
from services.ingest.feeds import community_csv, gp_fhir, hl7v2, socialcare_events
from services.ingest.labelling import labels_for, load_code_lists
from services.ingest.schemas import EVENT_ADAPTER
from services.ingest.settings import IngestSettings
from shared import nhs_number
from tools.synth import ics

SIZE = 4_000


def _fingerprint(people: list[ics.Planned], seed: int = ics.DEFAULT_SEED) -> str:
    digest = hashlib.sha256()
    for part in (list(ics.gp_bundles(people, seed)), list(ics.adt_messages(people, seed)),
                 [f.decode() for f in ics.community_files(people, seed=seed)], list(ics.social_events(people, seed)),
                 list(ics.preference_changes(people))):
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def people() -> list[ics.Planned]:
    return ics.plan(SIZE)


def test_the_same_seed_gives_the_same_inputs_and_another_seed_others(people) -> None:
    assert _fingerprint(people) == _fingerprint(ics.plan(SIZE))
    other = ics.plan(SIZE, seed=7)
    assert _fingerprint(other, 7) != _fingerprint(people)


def test_a_slice_of_the_population_is_the_same_whatever_came_before(people) -> None:
    assert _fingerprint(people[10:20]) == _fingerprint(ics.plan(SIZE)[10:20])


@pytest.mark.parametrize("resources", [1_000, 100_000, 1_000_000])
def test_one_number_sizes_the_population(resources: int) -> None:
    planned = ics.plan(resources)
    assert resources <= ics.estimate(planned) < resources * 1.01 + 400
    assert ics.heavy(planned)  # at least one long record for $everything


def test_every_gp_bundle_is_accepted_whole(people) -> None:
    for bundle in ics.gp_bundles(people):
        mapped = gp_fhir.map_bundle(json.loads(json.dumps(bundle)), max_entries=IngestSettings().max_bundle_entries)
        assert not mapped.rejected and len(mapped.items) == len(bundle["entry"])


def test_every_adt_message_maps() -> None:
    people = ics.plan(1_500)
    events = Counter()
    for batch in ics.adt_messages(people):
        for message in batch:
            mapped = hl7v2.map_adt(message)
            events[message.split("|")[8]] += 1
            assert mapped.patients
    assert set(events) == {"ADT^A28^ADT_A05", "ADT^A01^ADT_A01", "ADT^A03^ADT_A03"}


def test_every_community_row_is_accepted(people) -> None:
    rows = 0
    for extract in ics.community_files(people, rows_per_file=100):
        mapped = community_csv.map_csv(extract, org="RY6", max_rows=IngestSettings().max_csv_rows)
        assert not mapped.rejected
        rows += extract.count(b"\r\n") - 1
    assert rows > 50


def test_every_social_care_event_is_valid_against_the_published_schema_and_maps(people) -> None:
    kinds = Counter()
    for key, event in ics.social_events(people):
        EVENT_ADAPTER.validate_python(json.loads(json.dumps(event)))
        socialcare_events.map_event(json.loads(json.dumps(event)))
        assert key in (event["person"].get("nhs_number"), event["person"]["local_id"])
        kinds[event["event_type"]] += 1
    assert {"care_package.started", "assessment.completed", "safeguarding.concern_raised"} <= set(kinds)


def test_objections_and_opt_outs_are_valid_preference_documents(people) -> None:
    changes = list(ics.preference_changes(people))
    assert any(d["direct_care"] == "object" for _, d in changes)
    assert any(d["national_data_opt_out"] for _, d in changes)
    for number, document in changes:
        assert nhs_number.problem(number) is None
        preferences.parse(document)


def test_the_mix_has_what_the_benchmark_needs(people) -> None:
    persons = [p.person for p in people]
    numbers = [p.nhs_number for p in persons if p.nhs_number]
    assert all(n.startswith("999") and nhs_number.problem(n) is None for n in numbers)
    assert len(set(numbers)) == len(numbers)
    assert any(p.nhs_number is None for p in persons)
    assert any(p.s_flag for p in persons)
    duplicates = [p for p in people if p.profile.duplicate_elsewhere]
    assert duplicates and all(d.elsewhere.nhs_number is None and d.elsewhere.near_duplicate_of == d.person.key
                              for d in duplicates)
    heavy = ics.heavy(people)[0]
    planned = next(p for p in people if p.person is heavy)
    assert 250 <= planned.profile.estimate() <= 350


def test_sensitive_items_are_labelled(people) -> None:
    code_lists = load_code_lists(IngestSettings().label_code_lists)
    labels: Counter[str] = Counter()
    for bundle in ics.gp_bundles(people):
        for entry in bundle["entry"]:
            labels.update(labels_for(entry["resource"], code_lists, channel="fhir"))
    assert {"HIV", "PSY"} <= set(labels) and labels["STD"] + labels["TBOO"] + labels["SEX"] > 0
