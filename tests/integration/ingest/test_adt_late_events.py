"""A stay's ADT messages in any order: a late event (older than the stored state) is replayed with the stay's
archived messages in event-time order, so status, period and the ward history all come out as if the PAS's
messages had arrived in the order it sent them."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.schema import Resource
from tools.load import messages

pytestmark = pytest.mark.integration

START = datetime(2024, 3, 1, 10, tzinfo=UTC)
ORDERS = [*itertools.permutations(range(3)), (2, 2, 1, 0, 0, 1)]  # every order, and one with duplicates


def _stay(ingest, person: messages.Person, order: tuple[int, ...], stay: list[str] | None = None) -> dict[str, Any]:
    visit = f"V{person.n:05d}"
    stay = stay or messages.admission(person, visit, START)
    for i in order:
        response = ingest.post_hl7(stay[i])
        assert response.status_code == 200 and "MSA|AA" in response.text, response.text
    return ingest.get(Resource, Resource.resource_type == "Encounter", Resource.source_key == f"visit:{visit}").body


def _wards(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(loc["location"]["display"], loc["status"], loc.get("period")) for loc in body.get("location", [])]


def test_every_order_gives_the_stay_of_the_order_sent_ward_history_included(ingest) -> None:
    people = messages.people(len(ORDERS) + 1, start=999_380_000)
    in_order = _stay(ingest, people[0], (0, 1, 2))
    assert _wards(in_order) == [  # ward 1 from admission to the transfer, then ward 7 until discharge
        ("WARD01 BAY1 BED1", "completed", {"start": "2024-03-01T10:00:00+00:00", "end": "2024-03-01T15:00:00+00:00"}),
        ("WARD07 BAY3 BED2", "completed", {"start": "2024-03-01T15:00:00+00:00", "end": "2024-03-03T10:00:00+00:00"})]
    for person, order in zip(people[1:], ORDERS, strict=True):
        body = _stay(ingest, person, order)
        assert body["status"] == in_order["status"] == "finished", order
        assert body["period"] == in_order["period"], order
        assert _wards(body) == _wards(in_order), (order, _wards(body))


def test_a_late_transfer_makes_a_new_version_that_a_later_replay_builds_on(ingest) -> None:
    (person,) = messages.people(1, start=999_381_000)
    visit = f"V{person.n:05d}"
    stay = [*messages.admission(person, visit, START),
            messages.adt(person, "A02", visit=visit, control=f"{visit}-4", at=START + timedelta(days=1),
                         ward="WARD09^BAY1^BED4", admitted=START)]
    # admit, discharge, then the two transfers late and in reverse: wards 1 -> 7 -> 9, as the PAS sent them.
    body = _stay(ingest, person, (0, 2, 3, 1), stay)
    assert _wards(body) == [
        ("WARD01 BAY1 BED1", "completed", {"start": "2024-03-01T10:00:00+00:00", "end": "2024-03-01T15:00:00+00:00"}),
        ("WARD07 BAY3 BED2", "completed", {"start": "2024-03-01T15:00:00+00:00", "end": "2024-03-02T10:00:00+00:00"}),
        ("WARD09 BAY1 BED4", "completed", {"start": "2024-03-02T10:00:00+00:00", "end": "2024-03-03T10:00:00+00:00"})]
    row = ingest.get(Resource, Resource.resource_type == "Encounter", Resource.source_key == f"visit:{visit}")
    assert row.version_id == 4  # every late transfer changed the stay, so each made a version
    assert _stay(ingest, person, (1,), stay) == body  # the same late message again: nothing changes


def test_a_discharge_delayed_behind_a_later_update_still_ends_the_stay(ingest) -> None:
    """An A08 sent after the discharge (a bed correction, say) overtakes the A03 on the way: the stay must still
    end, not show the patient in hospital for ever."""
    people = messages.people(2, start=999_382_000)
    stays = []
    for person in people:
        visit = f"V{person.n:05d}"
        stays.append([*messages.admission(person, visit, START),
                      messages.adt(person, "A08", visit=visit, control=f"{visit}-8", at=START + timedelta(days=3),
                                   ward="WARD07^BAY3^BED3", admitted=START)])  # the bed corrected: a change
    in_order = _stay(ingest, people[0], (0, 1, 2, 3), stays[0])
    late_discharge = _stay(ingest, people[1], (0, 1, 3, 2), stays[1])
    assert in_order["status"] == late_discharge["status"] == "finished"
    assert late_discharge["period"] == in_order["period"] == {"start": "2024-03-01T10:00:00+00:00",
                                                               "end": "2024-03-03T10:00:00+00:00"}
    assert _wards(late_discharge) == _wards(in_order)


def test_every_order_within_one_batch_gives_the_same_stay(ingest) -> None:
    # A backfill's batch keeps the extract's order, which need not be the PAS's: one transaction, the same rules.
    people = messages.people(len(ORDERS) + 1, start=999_382_000)
    in_order = _stay(ingest, people[0], (0, 1, 2))
    for person, order in zip(people[1:], ORDERS, strict=True):
        visit = f"V{person.n:05d}"
        stay = messages.admission(person, visit, START)
        batch = "BHS|^~\\&|PAS|RR8|SCR|ICS|20240304||||B1\r" + "".join(stay[i] for i in order) + f"BTS|{len(order)}\r"
        response = ingest.post_hl7(batch)
        assert response.status_code == 200 and response.text.count("MSA|AA") == len(order), response.text
        body = ingest.get(Resource, Resource.resource_type == "Encounter", Resource.source_key == f"visit:{visit}").body
        assert (body["status"], body["period"], _wards(body)) == \
            (in_order["status"], in_order["period"], _wards(in_order)), order
