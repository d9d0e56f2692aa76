"""The store schema: resources, history, search rows, person index, raw archive, audit, consents, event log.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("recorded", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("person_id", sa.String(length=64), nullable=True),
        sa.Column("nhs_number", sa.String(length=10), nullable=True),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor_user", sa.String(length=128), nullable=True),
        sa.Column("actor_ods", sa.String(length=16), nullable=True),
        sa.Column("actor_role", sa.String(length=16), nullable=True),
        sa.Column("purpose", sa.String(length=16), nullable=True),
        sa.Column("break_glass_reason", sa.Text(), nullable=True),
        sa.Column("body", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.create_index("ix_audit_nhs", ["nhs_number", "recorded"], unique=False)
        batch_op.create_index("ix_audit_org", ["actor_ods", "recorded"], unique=False)
        batch_op.create_index("ix_audit_person", ["person_id", "recorded"], unique=False)
        batch_op.create_index("ix_audit_user", ["actor_user", "recorded"], unique=False)

    op.create_table(
        "consent",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("nhs_number", sa.String(length=10), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("author_kind", sa.String(length=16), nullable=False),
        sa.Column("author_ods", sa.String(length=16), nullable=True),
        sa.Column("author_role", sa.String(length=16), nullable=True),
        sa.Column("author_user", sa.String(length=128), nullable=True),
        sa.Column("body", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("consent", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consent_nhs_number"), ["nhs_number"], unique=False)

    op.create_table(
        "consent_version",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("nhs_number", sa.String(length=10), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("id", "version_id"),
    )
    with op.batch_alter_table("consent_version", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consent_version_nhs_number"), ["nhs_number"], unique=False)

    op.create_table(
        "event_log",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("topic", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=256), nullable=True),
        sa.Column("payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("event_log", schema=None) as batch_op:
        batch_op.create_index("ix_event_log_topic", ["topic", "id"], unique=False)

    op.create_table(
        "event_offset",
        sa.Column("group_id", sa.String(length=128), nullable=False),
        sa.Column("topic", sa.String(length=128), nullable=False),
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("group_id", "topic"),
    )
    op.create_table(
        "match_review",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("source_patient_id", sa.String(length=64), nullable=False),
        sa.Column("candidate_person_id", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("explanation", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("match_review", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_match_review_source_patient_id"), ["source_patient_id"], unique=False
        )

    op.create_table(
        "patient_merge",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("surviving_patient_id", sa.String(length=64), nullable=False),
        sa.Column("retired_patient_id", sa.String(length=64), nullable=False),
        sa.Column("previous_state", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("raw_message_id", sa.String(length=36), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("patient_merge", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_patient_merge_retired_patient_id"), ["retired_patient_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_patient_merge_surviving_patient_id"), ["surviving_patient_id"], unique=False
        )

    op.create_table(
        "person",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("nhs_number", sa.String(length=10), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("merged_into", sa.String(length=64), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("nhs_number"),
    )
    op.create_table(
        "person_link",
        sa.Column("source_patient_id", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("explanation", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source_patient_id"),
    )
    with op.batch_alter_table("person_link", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_person_link_person_id"), ["person_id"], unique=False)

    op.create_table(
        "raw_message",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("content_type", sa.String(length=128), nullable=False),
        sa.Column("sender_org", sa.String(length=16), nullable=True),
        sa.Column("sender_system", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("raw_message", schema=None) as batch_op:
        batch_op.create_index("ix_raw_hash", ["content_hash"], unique=False)
        batch_op.create_index("ix_raw_status", ["status", "received_at"], unique=False)

    op.create_table(
        "resource",
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.String(length=64), nullable=True),
        sa.Column("source_patient_id", sa.String(length=64), nullable=True),
        sa.Column("source_system", sa.String(length=128), nullable=False),
        sa.Column("source_org", sa.String(length=16), nullable=False),
        sa.Column("source_key", sa.String(length=256), nullable=True),
        sa.Column("source_updated", sa.DateTime(timezone=True), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("labels", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("body", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("resource_type", "id"),
        sa.UniqueConstraint(
            "source_org", "source_system", "resource_type", "source_key", name="uq_resource_source"
        ),
    )
    with op.batch_alter_table("resource", schema=None) as batch_op:
        batch_op.create_index(
            "ix_resource_person", ["person_id", "resource_type", "last_updated"], unique=False
        )
        batch_op.create_index("ix_resource_source_patient", ["source_patient_id"], unique=False)
        batch_op.create_index("ix_resource_type_updated", ["resource_type", "last_updated"], unique=False)

    op.create_table(
        "resource_version",
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.String(length=64), nullable=True),
        sa.Column("source_org", sa.String(length=16), nullable=False),
        sa.Column("raw_message_id", sa.String(length=36), nullable=True),
        sa.Column("labels", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("body", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("resource_type", "id", "version_id"),
    )
    with op.batch_alter_table("resource_version", schema=None) as batch_op:
        batch_op.create_index("ix_resource_version_person", ["person_id", "last_updated"], unique=False)
        batch_op.create_index(
            "ix_resource_version_type_updated", ["resource_type", "last_updated"], unique=False
        )

    op.create_table(
        "search_param",
        sa.Column(
            "row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.String(length=64), nullable=True),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=256), nullable=True),
        sa.Column("code", sa.String(length=256), nullable=True),
        sa.Column("text", sa.String(length=256), nullable=True),
        sa.Column("date_low", sa.DateTime(timezone=True), nullable=True),
        sa.Column("date_high", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ref_type", sa.String(length=64), nullable=True),
        sa.Column("ref_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("row_id"),
    )
    with op.batch_alter_table("search_param", schema=None) as batch_op:
        batch_op.create_index(
            "ix_search_date", ["resource_type", "param", "date_low", "date_high"], unique=False
        )
        batch_op.create_index("ix_search_ref", ["param", "ref_type", "ref_id"], unique=False)
        batch_op.create_index("ix_search_resource", ["resource_type", "resource_id"], unique=False)
        batch_op.create_index("ix_search_text", ["resource_type", "param", "text"], unique=False)
        batch_op.create_index("ix_search_token", ["resource_type", "param", "code", "system"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("search_param", schema=None) as batch_op:
        batch_op.drop_index("ix_search_token")
        batch_op.drop_index("ix_search_text")
        batch_op.drop_index("ix_search_resource")
        batch_op.drop_index("ix_search_ref")
        batch_op.drop_index("ix_search_date")

    op.drop_table("search_param")
    with op.batch_alter_table("resource_version", schema=None) as batch_op:
        batch_op.drop_index("ix_resource_version_type_updated")
        batch_op.drop_index("ix_resource_version_person")

    op.drop_table("resource_version")
    with op.batch_alter_table("resource", schema=None) as batch_op:
        batch_op.drop_index("ix_resource_type_updated")
        batch_op.drop_index("ix_resource_source_patient")
        batch_op.drop_index("ix_resource_person")

    op.drop_table("resource")
    with op.batch_alter_table("raw_message", schema=None) as batch_op:
        batch_op.drop_index("ix_raw_status")
        batch_op.drop_index("ix_raw_hash")

    op.drop_table("raw_message")
    with op.batch_alter_table("person_link", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_person_link_person_id"))

    op.drop_table("person_link")
    op.drop_table("person")
    with op.batch_alter_table("patient_merge", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_merge_surviving_patient_id"))
        batch_op.drop_index(batch_op.f("ix_patient_merge_retired_patient_id"))

    op.drop_table("patient_merge")
    with op.batch_alter_table("match_review", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_match_review_source_patient_id"))

    op.drop_table("match_review")
    op.drop_table("event_offset")
    with op.batch_alter_table("event_log", schema=None) as batch_op:
        batch_op.drop_index("ix_event_log_topic")

    op.drop_table("event_log")
    with op.batch_alter_table("consent_version", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_version_nhs_number"))

    op.drop_table("consent_version")
    with op.batch_alter_table("consent", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_nhs_number"))

    op.drop_table("consent")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_user")
        batch_op.drop_index("ix_audit_person")
        batch_op.drop_index("ix_audit_org")
        batch_op.drop_index("ix_audit_nhs")

    op.drop_table("audit_event")
