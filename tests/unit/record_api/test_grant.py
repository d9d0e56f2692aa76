"""What a Grant lets through: objections, labels (with the own-organisation exemption), role types, and the
S-flag redaction, applied without touching stored bodies."""

import json
from dataclasses import replace
from datetime import UTC, datetime

from services.record_api.consent_client import parse_decision
from services.record_api.enforcement import Grant
from services.record_api.store import CensusRow
from shared.schema import Person
from tests.unit.record_api.test_consent_client import PERMIT


def _grant(s_flag: bool = False, **decision) -> Grant:
    answer = PERMIT | {"withhold_labels": ["HIV"], "obligations": []} | decision
    person = Person(id="p1", nhs_number="9990000018", status="active", version=1)
    return Grant(person, parse_decision(json.dumps(answer).encode()), "RR8", "care", s_flag)


def _row(rtype: str = "Condition", org: str = "Y12345", labels: tuple[str, ...] = (), person: str = "p1"):
    return CensusRow(rtype, f"{rtype}-{org}-{'-'.join(labels)}", datetime(2026, 1, 1, tzinfo=UTC), org, labels,
                     person)


def test_labels_are_withheld_except_from_the_recording_organisation() -> None:
    grant = _grant()
    assert grant.reason_hidden(_row(labels=("HIV",))) == "label"
    assert grant.reason_hidden(_row(org="RR8", labels=("HIV",))) is None
    assert grant.reason_hidden(_row(labels=("V",))) == "label"  # sealed at source, whatever consent says
    assert grant.reason_hidden(_row(labels=("SOC",))) is None


def test_an_objection_leaves_only_the_callers_own_records() -> None:
    grant = _grant(own_organisation_only=True)
    assert grant.reason_hidden(_row()) == "objection"
    assert grant.reason_hidden(_row(org="RR8")) is None


def test_role_types_and_other_persons() -> None:
    grant = _grant(allowed_types=["Patient", "Encounter"])
    assert grant.reason_hidden(_row("Condition")) == "role"
    assert grant.reason_hidden(_row("Encounter")) is None
    assert grant.reason_hidden(_row(person="p2")) == "other-person"


def test_filter_counts_each_withheld_item_once_and_ignores_other_persons() -> None:
    grant = _grant()
    rows = [_row(), _row(labels=("HIV",)), _row(person="p2")]
    assert grant.filter(rows) == [rows[0]]
    grant.filter(rows)
    assert grant.withheld_count == 1 and dict(grant.withheld) == {"label": 1}


def test_redaction_for_s_flag_or_the_obligation() -> None:
    patient = {"resourceType": "Patient", "id": "x", "meta": {"security": [{"code": "R"}]},
               "address": [{}], "telecom": [{}], "contact": [{}], "generalPractitioner": [{}], "name": [{}]}
    for grant in (_grant(s_flag=True), _grant(obligations=["redact-location"])):
        shown = grant.redact(patient)
        assert set(shown) == {"resourceType", "id", "meta", "name"}
        assert shown["meta"]["security"][-1]["code"] == "REDACTED"
    assert "address" in patient and patient["meta"]["security"] == [{"code": "R"}]  # stored body untouched
    encounter = {"resourceType": "Encounter", "location": [{}], "status": "finished"}
    assert "location" not in _grant(s_flag=True).redact(encounter)
    assert _grant().redact(encounter) is encounter


def test_a_provenance_is_visible_only_through_a_target_the_caller_may_see() -> None:
    hiv, asthma = _row(labels=("HIV",)), _row()
    targets = {"prov-hiv": [hiv], "prov-both": [hiv, asthma], "prov-none": []}
    grant = _grant()
    grant.targets_of = lambda ids: {i: targets[i] for i in ids}
    assert grant.reason_hidden(_provenance("prov-hiv")) == "label"
    assert grant.reason_hidden(_provenance("prov-none")) == "label"  # nothing to judge it by
    assert grant.reason_hidden(_provenance("prov-both")) is None
    assert grant.visible_targets("prov-both") == {asthma.ref}
    assert grant.withheld_count == 1  # the target left out of what is shown


def test_a_label_the_decision_was_not_asked_about_is_withheld() -> None:
    grant = _grant(withhold_labels=[])
    grant.decided = frozenset({"SOC"})
    assert grant.reason_hidden(_row(labels=("HIV",))) == "label"  # e.g. a deleted item's, not on the record now
    assert grant.reason_hidden(_row(labels=("SOC",))) is None
    assert grant.reason_hidden(_row(org="RR8", labels=("HIV",))) is None


def _provenance(resource_id: str) -> CensusRow:
    return replace(_row("Provenance"), id=resource_id)
