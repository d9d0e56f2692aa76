"""Ingest branch: the sender's own id for each processed message (`raw_message.message_key`, a social-care
event's `socialcare:<ODS>:<event_id>`), indexed where present, so an id re-used for a different event is found
and refused with one index lookup. Nullable: messages archived before it, and feeds without ids of their own,
have none.

Revision ID: ingest_0003
Revises: ingest_0002
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "ingest_0003"
down_revision: str | Sequence[str] | None = "ingest_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PRESENT = sa.text("message_key IS NOT NULL")


def upgrade() -> None:
    op.add_column("raw_message", sa.Column("message_key", sa.String(length=128), nullable=True))
    op.create_index("ix_raw_message_key", "raw_message", ["message_key"], postgresql_where=_PRESENT,
                    sqlite_where=_PRESENT)


def downgrade() -> None:
    op.drop_index("ix_raw_message_key", table_name="raw_message")
    with op.batch_alter_table("raw_message") as batch_op:
        batch_op.drop_column("message_key")
