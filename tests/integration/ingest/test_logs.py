"""Log lines never carry patient data: not for accepted messages, not for refused ones, not for faults."""

import json

import pytest
from sqlalchemy import text

from tests.fixtures.ingest import messages
from tests.support import data

pytestmark = pytest.mark.integration


def test_no_nhs_number_name_postcode_or_clinical_text_reaches_the_logs(caplog, ingest) -> None:
    caplog.set_level("INFO")
    ingest.post_hl7(messages.text("adt_a01_itk.hl7"))
    ingest.post_hl7(messages.adt("A01", nhs=data.INVALID_NHS_NUMBER, control="BAD"))
    ingest.client.post("/ingest/community", content=messages.text("community_contacts.csv").encode(),
                       headers=ingest.feed(data.COMMUNITY_ODS))
    with ingest.sessions.begin() as session:
        session.execute(text("ALTER TABLE search_param RENAME TO search_param_away"))
    ingest.post_fhir(messages.load_json("gp_record_bundle.json"))  # fails: its error quotes SQL parameters
    with ingest.sessions.begin() as session:
        session.execute(text("ALTER TABLE search_param_away RENAME TO search_param"))
    # structlog hands each record to logging as its event dictionary: everything a log line would show.
    events = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    assert any(e.get("event") == "message processing failed" for e in events)
    assert any(e.get("event") == "message rejected" for e in events)
    assert any(e.get("event") == "request" and e.get("route") == "/ingest/hl7v2" for e in events)
    logged = json.dumps(events, default=str) + "\n".join(r.getMessage() for r in caplog.records)
    assert "/ingest/hl7v2" in logged and "raw_id" in logged  # the check reads what was really logged
    for secret in (data.NHS_NUMBERS[0], data.INVALID_NHS_NUMBER, "9990000034", "ORANGE", "Blossom", "Okafor",
                   "Nowak", "LS1 4AB", "LS9 7TF", "Pneumonia", "HIV disease", "Penicillin", "Depressive"):
        assert secret not in logged, secret
