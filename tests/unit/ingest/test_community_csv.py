"""The community CSV adapter: one contact per row; bad rows named by row number and column, good rows kept."""

import pytest

from services.ingest.feeds import community_csv
from services.ingest.feeds.model import AdapterError
from tests.fixtures.ingest import messages
from tests.support import data


def _fixture() -> bytes:
    return messages.text("community_contacts.csv").encode()


def test_good_rows_map_to_patients_contacts_and_episodes_while_the_bad_row_is_reported() -> None:
    mapped = community_csv.map_csv(_fixture(), org=data.COMMUNITY_ODS, max_rows=100)
    assert [r.index for r in mapped.rejected] == [5]
    columns = {i.expression for i in mapped.rejected[0].issues}
    assert columns == {"row[5].nhs_number", "row[5].birth_date", "row[5].postcode", "row[5].outcome"}
    kinds = [i.resource_type for i in mapped.items]
    assert kinds.count("Patient") == 2 and kinds.count("Encounter") == 4 and kinds.count("EpisodeOfCare") == 2
    patient = next(i for i in mapped.items if i.source_key == "local:RY6-P-501").resource
    assert patient["identifier"][0]["value"] == "9990000034"
    assert patient["identifier"][0]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] == "01"
    assert patient["address"][0]["postalCode"] == "LS9 7TF"
    mensah = next(i for i in mapped.items if i.source_key == "local:RY6-P-502").resource
    assert mensah["birthDate"] == "1948-09-07"  # DD/MM/YYYY accepted
    dna = next(i for i in mapped.items if i.source_key == "contact:RY6-C-1003").resource
    assert dna["status"] == "cancelled"
    assert dna["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] == "did-not-attend"
    visit = next(i for i in mapped.items if i.source_key == "contact:RY6-C-1001").resource
    assert visit["period"]["start"] == "2024-03-04T09:30:00+00:00"
    assert visit["participant"][0]["type"][0]["text"] == "District nurse"


def test_an_episode_spans_its_contacts_and_ends_at_discharge() -> None:
    mapped = community_csv.map_csv(_fixture(), org=data.COMMUNITY_ODS, max_rows=100)
    episode = next(i for i in mapped.items if i.source_key == "episode:RY6-P-501:DN")
    assert episode.resource["status"] == "finished"
    assert episode.resource["period"] == {"start": "2024-03-04", "end": "2024-03-18"}
    # A later file with an earlier contact widens the stored episode rather than replacing it.
    assert episode.merge({"period": {"start": "2024-01-02"}})["period"]["start"] == "2024-01-02"


@pytest.mark.parametrize("content, expression", [
    (b"\xff\xfe not utf-8 \xff", "file"),
    (b"contact_id,local_patient_id\n1,2\n", "row[1]"),
    (b"contact_id,local_patient_id,family_name,given_name,birth_date,service,clinician_role,contact_date,outcome,"
     b"shoe_size\n", "row[1]"),
    (b"contact_id,local_patient_id,family_name,given_name,birth_date,service,clinician_role,contact_date,outcome\n",
     "rows"),
    (b"a\x00b", "file"),
])
def test_files_that_are_not_usable_are_refused_whole(content: bytes, expression: str) -> None:
    with pytest.raises(AdapterError) as caught:
        community_csv.map_csv(content, org=data.COMMUNITY_ODS, max_rows=100)
    assert caught.value.issues[0].expression == expression


def test_a_row_with_the_wrong_number_of_fields_is_reported_by_number() -> None:
    header = "contact_id,local_patient_id,family_name,given_name,birth_date,service,clinician_role,contact_date,outcome"
    content = f"{header}\nC1,P1,Smith,Ann,1950-01-01,DN,Nurse,2024-01-01,attended\nC2,P2,Jones\n".encode()
    mapped = community_csv.map_csv(content, org=data.COMMUNITY_ODS, max_rows=100)
    assert [r.where for r in mapped.rejected] == ["row[3]"]
    assert {i.source_key for i in mapped.items} >= {"contact:C1", "local:P1"}


def test_rows_are_numbered_by_the_line_they_start_on_blank_lines_and_multi_line_fields_included() -> None:
    header = "contact_id,local_patient_id,family_name,given_name,birth_date,service,clinician_role,contact_date,outcome"
    good = "C{n},P{n},Smith,Ann,1950-01-01,DN,Nurse,2024-01-01,attended"
    bad = "C{n},P{n},Smith,Ann,1960-13-01,DN,Nurse,2024-01-01,attended"
    lines = [header, good.format(n=1), "", bad.format(n=2), 'C3,P3,Smith,Ann,1950-01-01,"District\r\nnursing",Nurse,'
             "2024-01-01,attended", bad.format(n=4)]
    content = ("\ufeff" + "\r\n".join(lines) + "\r\n").encode()
    mapped = community_csv.map_csv(content, org=data.COMMUNITY_ODS, max_rows=100)
    assert [r.where for r in mapped.rejected] == ["row[4]", "row[7]"]
    assert {"contact:C1", "contact:C3"} <= {i.source_key for i in mapped.items}


def test_blank_lines_do_not_count_towards_the_row_limit() -> None:
    header = "contact_id,local_patient_id,family_name,given_name,birth_date,service,clinician_role,contact_date,outcome"
    rows = "".join(f"C{n},P{n},Smith,Ann,1950-01-01,DN,Nurse,2024-01-01,attended\n\n" for n in range(3))
    mapped = community_csv.map_csv(f"{header}\n{rows}".encode(), org=data.COMMUNITY_ODS, max_rows=3)
    assert not mapped.rejected and {"contact:C0", "contact:C2"} <= {i.source_key for i in mapped.items}


def test_more_rows_than_allowed_are_refused() -> None:
    header = "contact_id,local_patient_id,family_name,given_name,birth_date,service,clinician_role,contact_date,outcome"
    rows = "".join(f"C{n},P{n},Smith,Ann,1950-01-01,DN,Nurse,2024-01-01,attended\n" for n in range(5))
    with pytest.raises(AdapterError) as caught:
        community_csv.map_csv(f"{header}\n{rows}".encode(), org=data.COMMUNITY_ODS, max_rows=3)
    assert caught.value.issues[0].code == "too-costly"
