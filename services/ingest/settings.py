"""Ingest service settings (SCR_ environment variables)."""

from pathlib import Path

from pydantic import Field

from shared.events import SOCIALCARE_DLQ, SOCIALCARE_EVENTS
from shared.settings import ServiceSettings

_HERE = Path(__file__).resolve().parent


class IngestSettings(ServiceSettings):
    service_name: str = "ingest"
    port: int = 8002

    # MLLP listener for HL7 v2 (port 0 picks a free port, for tests); off for processes that only serve HTTP.
    mllp_enabled: bool = True
    mllp_host: str = "127.0.0.1"
    mllp_port: int = 2575
    # A connection is closed after this long without a byte between messages (the sender reconnects to send
    # again), and when a frame it started is not finished this long after its start block: a sender that goes
    # quiet would otherwise hold a thread and a socket for ever.
    mllp_idle_timeout_seconds: float = Field(300.0, gt=0)
    mllp_frame_timeout_seconds: float = Field(30.0, gt=0)

    # The socialcare.events consumer (Kafka in real mode, the embedded event log otherwise); the switch has the
    # same name as the consent service's, so SCR_CONSUMERS_ENABLED=false stops background consumers in either.
    consumers_enabled: bool = True
    consumer_group: str = "ingest"
    socialcare_topic: str = SOCIALCARE_EVENTS
    socialcare_dlq_topic: str = SOCIALCARE_DLQ
    consumer_poll_seconds: float = 1.0
    # How often an event whose processing fails (not a bad event: a fault here) is retried before it is
    # dead-lettered; its raw copy stays archived as `failed` for the admin retry.
    consumer_max_attempts: int = 3
    # How often processing a message is made again after a transient database conflict with a concurrent one (a
    # deadlock, a serialization failure, a lock timeout), after a short jittered pause, before it is recorded failed.
    conflict_retries: int = Field(4, ge=0)
    # A raw message still `received` this long after it arrived is unfinished: its processing was cut off (the
    # process killed, the database gone before the failure could be recorded). Longer than any processing takes, so
    # a message another replica is still working through never counts.
    raw_unfinished_after_seconds: float = Field(300.0, gt=0)
    # How long a scrape of /metrics waits for the raw archive's gauges to be counted before it reports their last
    # values: well inside Prometheus's scrape timeout (10 s), whatever the database does.
    raw_gauges_wait_seconds: float = Field(2.0, gt=0)
    # A sender's time (meta.lastUpdated, MSH-7, occurred_at, a CSV's last_updated) later than the message's receipt by
    # more than this is not believed for ordering: it counts as the receipt time (docs/INGEST.md, "The sender's
    # clock"). A little is tolerated so a clock slightly ahead keeps its messages in the order it sent them.
    sender_clock_skew_seconds: float = Field(300.0, ge=0)
    # record.changed leaves through the outbox relay; after relaying a batch it lets the next gather this long.
    outbox_linger_seconds: float = 0.05

    # Size limits: bodies and MLLP frames over these are refused (413 / AR) before anything is parsed.
    max_body_bytes: int = 10 * 1024 * 1024
    max_bundle_entries: int = 5000
    max_csv_rows: int = 50_000
    max_hl7_bytes: int = 1024 * 1024

    # Person-index thresholds on the explainable demographic score (see services/ingest/identity.py).
    match_link_threshold: float = 13.0
    match_review_threshold: float = 7.0

    # Sensitivity code lists (SNOMED CT, ICD-10, Read) per label; an operator may point this at their own file.
    label_code_lists: str = str(_HERE / "labels.json")
