"""What makes a re-send idempotent and a stored body servable: the content hash and the stamps."""

from datetime import UTC, datetime

from services.ingest.feeds.model import rewrite_references
from services.ingest.records import WriteContext, content_hash, stamp, unresolved_local_reference
from tests.fixtures.ingest import messages


def test_the_hash_ignores_server_fields_but_not_content_security_or_source_flags() -> None:
    condition = messages.condition("44054006", "Diabetes", ident="P1")
    stamped = condition | {"id": "abc", "meta": {"versionId": "7", "lastUpdated": "2024-01-01T00:00:00Z"}}
    assert content_hash(stamped) == content_hash(condition)
    assert content_hash(condition | {"recordedDate": "2023-04-03"}) != content_hash(condition)
    sealed = condition | {"meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                                 "code": "V"}]}}
    assert content_hash(sealed) != content_hash(condition)
    assert content_hash(condition, flags=("V",)) != content_hash(condition)


def test_stamps_carry_version_source_tags_and_labels_and_keep_the_profile() -> None:
    ctx = WriteContext("RR8", "PAS", "raw-1", datetime(2024, 3, 1, 10, 0, tzinfo=UTC))
    body = {"resourceType": "Patient", "meta": {"profile": ["p"], "security": [{"code": "sender"}]}}
    stored = stamp(body, "id-1", 3, ["R"], ctx, "RR8", "PAS")
    assert stored["id"] == "id-1"
    assert stored["meta"] == {
        "profile": ["p"], "versionId": "3", "lastUpdated": "2024-03-01T10:00:00+00:00",
        "source": "urn:scr:ods:RR8:PAS",
        "tag": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "code": "RR8"},
                {"system": "urn:scr:source-system", "code": "PAS"}],
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}
    assert body["meta"]["security"] == [{"code": "sender"}]  # the mapped body is not changed


def test_local_references_are_rewritten_everywhere_and_leftovers_found() -> None:
    body = {"subject": {"reference": "urn:scr:entry:0"}, "note": [{"author": {"reference": "urn:scr:entry:3"}}]}
    rewritten = rewrite_references(body, {"urn:scr:entry:0": "Patient/p1"})
    assert rewritten["subject"] == {"reference": "Patient/p1"}
    assert unresolved_local_reference(rewritten) == "urn:scr:entry:3"
    assert unresolved_local_reference({"entity": [{"what": {"reference": "urn:scr:raw:1"}}]}) is None
