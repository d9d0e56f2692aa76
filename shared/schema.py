"""The store schema all three services share: resources with history and search rows, the person index,
the raw inbound archive, audit events, consents, and the embedded event log.

Every table that holds patient data carries `person_id` so that a move to Citus (distributed by person)
needs no redesign: a person's whole record lives on one shard and `$everything` is a single-shard query.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JsonType = JSON().with_variant(JSONB(), "postgresql")
Timestamp = DateTime(timezone=True)
# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit sequence.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JsonType, list[str]: JsonType, datetime: Timestamp}


class Resource(Base):
    """The current version of every stored FHIR resource, as served (id, meta.versionId, lastUpdated set)."""

    __tablename__ = "resource"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer)
    person_id: Mapped[str | None] = mapped_column(String(64))
    # The source Patient record this resource hangs off; merges re-point by this column.
    source_patient_id: Mapped[str | None] = mapped_column(String(64))
    source_system: Mapped[str] = mapped_column(String(128))
    source_org: Mapped[str] = mapped_column(String(16))
    # The sender's own identity for the record (e.g. "visit:V123"); with source_org/system it makes re-sends idempotent.
    source_key: Mapped[str | None] = mapped_column(String(256))
    # The sender's own timestamp for the record, so a late, older update never overwrites a newer one.
    source_updated: Mapped[datetime | None]
    content_hash: Mapped[str] = mapped_column(String(64))
    labels: Mapped[list[str]] = mapped_column(default=list)
    last_updated: Mapped[datetime]
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    body: Mapped[dict[str, Any]]

    __table_args__ = (
        UniqueConstraint("source_org", "source_system", "resource_type", "source_key", name="uq_resource_source"),
        Index("ix_resource_person", "person_id", "resource_type", "last_updated"),
        Index("ix_resource_source_patient", "source_patient_id"),
        Index("ix_resource_type_updated", "resource_type", "last_updated"),
    )


class ResourceVersion(Base):
    """Every version ever stored, including the current one (vread, _history)."""

    __tablename__ = "resource_version"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[str | None] = mapped_column(String(64))
    source_org: Mapped[str] = mapped_column(String(16))
    raw_message_id: Mapped[str | None] = mapped_column(String(36))
    labels: Mapped[list[str]] = mapped_column(default=list)
    last_updated: Mapped[datetime]
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    body: Mapped[dict[str, Any]]

    __table_args__ = (
        Index("ix_resource_version_person", "person_id", "last_updated"),
        Index("ix_resource_version_type_updated", "resource_type", "last_updated"),
    )


class SearchParam(Base):
    """One row per indexed search value of a current resource (see shared/search.py for what is indexed)."""

    __tablename__ = "search_param"

    row_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    person_id: Mapped[str | None] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    system: Mapped[str | None] = mapped_column(String(256))
    code: Mapped[str | None] = mapped_column(String(256))
    # Bytewise order on PostgreSQL whatever the database's locale (migration record_api_0003), so a prefix search
    # is a range of ix_search_text; SQLite's default collation is bytewise already.
    text: Mapped[str | None] = mapped_column(String(256).with_variant(String(256, collation="C"), "postgresql"))
    date_low: Mapped[datetime | None]
    date_high: Mapped[datetime | None]
    ref_type: Mapped[str | None] = mapped_column(String(64))
    ref_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_search_resource", "resource_type", "resource_id"),
        Index("ix_search_token", "resource_type", "param", "code", "system"),
        Index("ix_search_text", "resource_type", "param", "text"),
        Index("ix_search_date", "resource_type", "param", "date_low", "date_high"),
        Index("ix_search_ref", "param", "ref_type", "ref_id"),
        Index("ix_search_person_param", "person_id", "param"),  # migration record_api_0002
    )


class Person(Base):
    """The one person behind linked source Patient records; its id is the Patient id the record API serves."""

    __tablename__ = "person"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    nhs_number: Mapped[str | None] = mapped_column(String(10), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | merged
    merged_into: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created: Mapped[datetime]
    updated: Mapped[datetime]


class PersonLink(Base):
    """Which person each source Patient record belongs to, how that was decided, and why."""

    __tablename__ = "person_link"

    source_patient_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(64), index=True)
    method: Mapped[str] = mapped_column(String(32))  # nhs-number | demographic | new-person | manual | merge
    score: Mapped[float | None] = mapped_column(Float)
    explanation: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created: Mapped[datetime]
    updated: Mapped[datetime]


class MatchReview(Base):
    """A possible match that was not strong enough to link automatically; waits for a person to decide."""

    __tablename__ = "match_review"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source_patient_id: Mapped[str] = mapped_column(String(64), index=True)
    candidate_person_id: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    explanation: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | linked | rejected
    created: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(128))


class PatientMerge(Base):
    """A merge of one source Patient record into another (HL7 A40), kept so it can be undone."""

    __tablename__ = "patient_merge"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    surviving_patient_id: Mapped[str] = mapped_column(String(64), index=True)
    retired_patient_id: Mapped[str] = mapped_column(String(64), index=True)
    previous_state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    raw_message_id: Mapped[str | None] = mapped_column(String(36))
    created: Mapped[datetime]
    undone_at: Mapped[datetime | None]


class RawMessage(Base):
    """Every accepted inbound message, byte for byte, stored before processing so nothing is ever lost."""

    __tablename__ = "raw_message"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))  # fhir | hl7v2 | mllp | community | socialcare
    received_at: Mapped[datetime]
    content_hash: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    content_type: Mapped[str] = mapped_column(String(128))
    sender_org: Mapped[str | None] = mapped_column(String(16))
    sender_system: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="received")  # received|processed|failed|rejected
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[datetime | None]
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)  # e.g. Kafka topic/partition/offset
    # The sender's own id for the message, once processed (`socialcare:<ODS>:<event_id>`): an id is unique per
    # sender, so one processed before with other content is refused. Held by the first message processed with it
    # (a re-send holds none), and unique, so two deliveries of one id processed at once cannot both be stored.
    message_key: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        Index("ix_raw_status", "status", "received_at"),
        Index("ix_raw_hash", "content_hash"),
        # Partial: most feeds carry no id of their own, and the archive holds every message ever received.
        Index("ix_raw_message_key", "message_key", unique=True, postgresql_where=text("message_key IS NOT NULL"),
              sqlite_where=text("message_key IS NOT NULL")),
    )


class AuditEventRow(Base):
    """Every access, denial and change, as a FHIR AuditEvent plus the columns it is searched by.

    `id` is the tamper-evident sequence number and `hash` chains each row to the one before.
    """

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    recorded: Mapped[datetime]
    service: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(32))  # read | search | everything | history | decide | ...
    outcome: Mapped[str] = mapped_column(String(16))  # success | denied | error
    person_id: Mapped[str | None] = mapped_column(String(64))
    nhs_number: Mapped[str | None] = mapped_column(String(10))
    actor_kind: Mapped[str] = mapped_column(String(16))  # clinician | citizen | system
    actor_user: Mapped[str | None] = mapped_column(String(128))
    actor_ods: Mapped[str | None] = mapped_column(String(16))
    actor_role: Mapped[str | None] = mapped_column(String(16))
    purpose: Mapped[str | None] = mapped_column(String(16))
    break_glass_reason: Mapped[str | None] = mapped_column(Text)
    body: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_nhs", "nhs_number", "recorded"),
        Index("ix_audit_person", "person_id", "recorded"),
        Index("ix_audit_user", "actor_user", "recorded"),
        Index("ix_audit_org", "actor_ods", "recorded"),
        # Each chain is walked in insertion order (migrations record_api_0001, consent_0001).
        Index("ix_audit_person_sequence", "person_id", "id"),
        Index("ix_audit_nhs_sequence", "nhs_number", "id"),
    )


class ConsentRecord(Base):
    """The current version of each FHIR Consent the consent service holds (citizen or professional)."""

    __tablename__ = "consent"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    nhs_number: Mapped[str] = mapped_column(String(10), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # preferences | dissent | consent | safety-override
    status: Mapped[str] = mapped_column(String(24))  # FHIR Consent.status
    version_id: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[datetime]
    period_start: Mapped[datetime | None]
    period_end: Mapped[datetime | None]
    author_kind: Mapped[str] = mapped_column(String(16))  # citizen | professional
    author_ods: Mapped[str | None] = mapped_column(String(16))
    author_role: Mapped[str | None] = mapped_column(String(16))
    author_user: Mapped[str | None] = mapped_column(String(128))
    body: Mapped[dict[str, Any]]

    # One citizen-preferences Consent per NHS number (migration consent_0001).
    __table_args__ = (Index("ux_consent_preferences", "nhs_number", unique=True,
                            postgresql_where=text("kind = 'preferences'"), sqlite_where=text("kind = 'preferences'")),)


class ConsentVersion(Base):
    """Every version of every Consent, for the citizen's history and for audit."""

    __tablename__ = "consent_version"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    nhs_number: Mapped[str] = mapped_column(String(10), index=True)
    recorded_at: Mapped[datetime]
    body: Mapped[dict[str, Any]]

    __table_args__ = (Index("ix_consent_version_nhs_recorded", "nhs_number", "recorded_at"),)  # consent_0001


class _QueuedEvent:
    """The columns of an event waiting to be read (the embedded log) or relayed (the outbox): ordered by id."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(128))
    key: Mapped[str | None] = mapped_column(String(256))
    payload: Mapped[dict[str, Any]]
    created: Mapped[datetime]


class EventLogEntry(_QueuedEvent, Base):
    """The embedded event log that stands in for Kafka when none is configured (one table, all topics)."""

    __tablename__ = "event_log"
    __table_args__ = (Index("ix_event_log_topic", "topic", "id"),)


class OutboxEvent(_QueuedEvent, Base):
    """Real mode's transactional outbox: ingest (record.changed) and consent (consent.changed) write each event in
    the transaction of the change it announces, and a relay per topic moves committed events to Kafka and deletes
    them (shared/outbox.py), so an event is published at least once whenever its change committed, even if Kafka
    was away at the time."""

    __tablename__ = "event_outbox"
    __table_args__ = (Index("ix_event_outbox_topic", "topic", "id"),)  # each relay reads its own topic in order


class EventOffset(Base):
    """Per consumer group, the id of the last event it has committed in each topic."""

    __tablename__ = "event_offset"

    group_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    topic: Mapped[str] = mapped_column(String(128), primary_key=True)
    position: Mapped[int] = mapped_column(BigId, default=0)
    updated: Mapped[datetime]
