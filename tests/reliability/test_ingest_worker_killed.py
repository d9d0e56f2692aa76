"""SIGKILL a real ingest process mid-batch, restart it, and count: nothing accepted is lost, nothing is stored
twice. Three ways a batch is in flight: a stream of social-care events on Kafka, a large FHIR Bundle being
processed, and an HL7 sender streaming ADT over MLLP."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime

import httpx
import pytest
from kafka import KafkaAdminClient
from sqlalchemy import select

from shared.events import KafkaEventBus
from shared.schema import RawMessage
from tests.reliability.conftest import SCALE, Counts, committed, wait_for
from tools.load import messages
from tools.processes import REPO_ROOT

pytestmark = pytest.mark.integration


def test_killing_ingest_mid_stream_of_socialcare_events_loses_and_duplicates_nothing(
        pg_url, kafka, make_stack, unique, figures) -> None:
    topic, group = f"socialcare.events.kill-{unique}", f"ingest-kill-{unique}"
    kafka.create_topics([topic], partitions=3)
    kafka.create_topics([f"{topic}.dlq"], partitions=1)
    persons, per_person = messages.people(30 * SCALE, start=999_310_000), 10
    sent = [messages.socialcare_event(p, i) for p in persons for i in range(per_person)]
    bus = KafkaEventBus(kafka.bootstrap, "kill-test-provider")
    for event in sent:
        bus.publish(topic, event["person"]["nhs_number"], event)
    bus.flush()
    bus.close()

    counts = Counts(pg_url)
    stack = make_stack(pg_url, kafka.bootstrap, SCR_SOCIALCARE_TOPIC=topic, SCR_SOCIALCARE_DLQ_TOPIC=f"{topic}.dlq",
                       SCR_CONSUMER_GROUP=group, SCR_MLLP_ENABLED="false")
    stack.start(("ingest",))
    wait_for(lambda: counts.resources("RelatedPerson") >= 20, 120, "the consumer to be mid-stream", 0.05)
    stack.kill("ingest")
    at_kill = counts.resources("RelatedPerson")
    assert at_kill < len(sent), "the kill must land mid-stream"

    stack.start_one("ingest")
    wait_for(lambda: counts.resources("RelatedPerson") == len(sent), 240, "every event stored after the restart")
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)

    wait_for(lambda: committed(admin, group, topic) == len(sent), 120, "every offset committed")
    admin.close()
    metrics = httpx.get(f"{stack.url('ingest')}/metrics").text
    figures.update(sent=len(sent), stored_at_kill=at_kill, stored=counts.resources("RelatedPerson"),
                   versions=counts.versions("RelatedPerson"), patients=counts.resources("Patient"),
                   persons=counts.persons(), raw_archived=counts.raw("socialcare"),
                   redelivered=counts.raw("socialcare") - len(sent))
    assert counts.resources("RelatedPerson") == len(sent)
    assert counts.versions("RelatedPerson") == len(sent)  # no event applied twice
    assert counts.max_version("RelatedPerson") == 1
    assert counts.resources("Patient") == len(persons) and counts.persons() == len(persons)
    assert counts.duplicate_source_keys() == 0
    assert counts.raw("socialcare") >= len(sent)  # every delivery archived, redeliveries included
    assert counts.raw("socialcare", "failed") == 0 and counts.raw("socialcare", "rejected") == 0
    assert "scr_ingest_dlq_total{" not in metrics  # nothing dead-lettered
    counts.close()


def test_killing_ingest_mid_bundle_leaves_it_archived_and_replay_and_resend_store_it_once(
        pg_url, kafka, make_stack, signer, figures) -> None:
    person = messages.people(1, start=999_320_000)[0]
    bundle = messages.gp_bundle(person, conditions=3000)
    counts = Counts(pg_url)
    stack = make_stack(pg_url, kafka.bootstrap, SCR_CONSUMERS_ENABLED="false", SCR_MLLP_ENABLED="false")
    stack.start(("ingest",))
    headers = {"Authorization": f"Bearer {signer.feed(messages.GP_ODS)}"}
    answers: list[object] = []

    def send() -> None:
        try:
            answers.append(httpx.post(f"{stack.url('ingest')}/ingest/fhir", json=bundle, headers=headers,
                                      timeout=300).status_code)
        except httpx.HTTPError as exc:
            answers.append(type(exc).__name__)

    sender = threading.Thread(target=send)
    sender.start()
    wait_for(lambda: counts.raw("fhir", "received") == 1, 60, "the bundle archived and being processed", 0.02)
    stack.kill("ingest")
    sender.join(30)
    assert answers and not isinstance(answers[0], int), "the sender got no answer: the process died mid-bundle"
    assert counts.raw("fhir", "received") == 1  # archived, unfinished...
    assert counts.resources("Condition") == 0 and counts.resources("Patient") == 0  # ...and nothing half-stored

    stack.start_one("ingest")
    with counts.sessions() as session:
        raw_id = session.scalar(select(RawMessage.id).where(RawMessage.channel == "fhir"))
    replay = subprocess.run([sys.executable, "-m", "services.ingest.cli", "retry", str(raw_id)], cwd=REPO_ROOT,
                            env=stack.env_for_cli(), capture_output=True, text=True, timeout=300)
    assert replay.returncode == 0, replay.stderr[-2000:]
    after_replay = counts.resources("Condition")
    resend = httpx.post(f"{stack.url('ingest')}/ingest/fhir", json=bundle, headers=headers, timeout=300)
    assert resend.status_code == 200
    statuses = {e["response"]["status"] for e in resend.json()["entry"]}
    figures.update(entries=len(bundle["entry"]), answer_before_kill=answers[0], stored_before_replay=0,
                   stored_after_replay=after_replay, resend_statuses=sorted(statuses),
                   conditions=counts.resources("Condition"), versions=counts.versions("Condition"),
                   raw_archived=counts.raw("fhir"))
    assert after_replay == 3000
    assert statuses == {"200 OK"}  # the resend changed nothing: every entry identical to what the replay stored
    assert counts.resources("Condition") == 3000 and counts.versions("Condition") == 3000
    assert counts.resources("Patient") == 1 and counts.persons() == 1
    assert counts.raw("fhir", "processed") == 2 and counts.raw("fhir") == 2
    counts.close()


def _mllp_exchange(port: int, message: str, timeout: float = 20) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(b"\x0b" + message.encode() + b"\x1c\r")
        reply = b""
        while b"\x1c\r" not in reply:
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before the ACK")
            reply += chunk
    return reply.decode("utf-8", "replace")


def test_killing_ingest_while_an_hl7_sender_streams_over_mllp_loses_and_duplicates_nothing(
        pg_url, kafka, make_stack, figures) -> None:
    """An MLLP sender resends whatever it has no ACK for (as interface engines do); ingest is killed mid-stream."""
    persons = messages.people(120 * SCALE, start=999_330_000)
    sent = [messages.adt(p, "A01", visit=f"V{p.n:05d}", control=f"C{p.n:05d}", at=datetime(2024, 3, 1, 10, tzinfo=UTC))
            for p in persons]
    counts = Counts(pg_url)
    stack = make_stack(pg_url, kafka.bootstrap, SCR_CONSUMERS_ENABLED="false")
    stack.start(("ingest",))
    port = stack.ports["mllp"]
    acks: list[str] = []
    resends = 0
    done = threading.Event()

    def sender() -> None:
        nonlocal resends
        for message in sent:
            while True:
                try:
                    reply = _mllp_exchange(port, message)
                    break
                except OSError:
                    resends += 1
                    done.wait(0.5)
            acks.append(reply.split("MSA|", 1)[1][:2])
        done.set()

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    wait_for(lambda: len(acks) >= 25, 120, "the sender to be mid-stream", 0.02)
    stack.kill("ingest")
    at_kill = counts.resources("Encounter")
    stack.start_one("ingest")
    wait_for(done.is_set, 300, "the sender to finish")
    figures.update(sent=len(sent), acks=len(acks), stored_at_kill=at_kill, resend_attempts=resends,
                   encounters=counts.resources("Encounter"), versions=counts.versions("Encounter"),
                   patients=counts.resources("Patient"), raw_archived=counts.raw("mllp"))
    assert at_kill < len(sent)
    assert acks == ["AA"] * len(sent)
    assert counts.resources("Encounter") == len(sent) and counts.versions("Encounter") == len(sent)
    assert counts.resources("Patient") == len(persons) and counts.persons() == len(persons)
    assert counts.duplicate_source_keys() == 0
    counts.close()
