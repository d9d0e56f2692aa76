"""Ingest branch: each outbox relay (ingest's record.changed, consent's consent.changed; shared/outbox.py) reads
its own topic in id order, so index the outbox by (topic, id) as the embedded event log is.

Revision ID: ingest_0002
Revises: ingest_0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "ingest_0002"
down_revision: str | Sequence[str] | None = "ingest_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_event_outbox_topic", "event_outbox", ["topic", "id"])


def downgrade() -> None:
    op.drop_index("ix_event_outbox_topic", table_name="event_outbox")
