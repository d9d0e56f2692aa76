"""Ingest branch: one processed message holds each sender's message id, and every social-care event holds its own.

Events processed before ingest_0003 get their `message_key` (`socialcare:<ODS>:<event_id>`, read from the archived
event), so their ids are checked for reuse too; their digests were never recorded and are worked out from the archive
when an id comes again (services/ingest/service.py `_digest_of`). Then only the first message processed with a key
(by receipt) keeps it: re-sends hold none, nor does a different event stored under the same id before the check
existed (it stays stored). Last, `ix_raw_message_key` becomes unique, so two deliveries of one id processed at the
same moment cannot both be stored: the second to commit fails on the index and its retry finds the first.

Revision ID: ingest_0004
Revises: ingest_0003
Create Date: 2026-12-06
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "ingest_0004"
down_revision: str | Sequence[str] | None = "ingest_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PRESENT = sa.text("message_key IS NOT NULL")
_PAGE = 1000
_BEFORE_ALL = {"at": datetime(1, 1, 1, tzinfo=UTC), "id": ""}
_RAW = sa.table("raw_message", sa.column("id", sa.String), sa.column("channel", sa.String),
                sa.column("status", sa.String), sa.column("received_at", sa.DateTime(timezone=True)),
                sa.column("content", sa.LargeBinary), sa.column("message_key", sa.String))
# Pages by (received_at, id) rather than one cursor: SQLite leaves a query undefined once its table is updated.
_AFTER = sa.tuple_(sa.bindparam("at", type_=sa.DateTime(timezone=True)), sa.bindparam("id", type_=sa.String))
_UNKEYED = (sa.select(_RAW.c.id, _RAW.c.received_at, _RAW.c.content)
            .where(_RAW.c.channel == "socialcare", _RAW.c.status == "processed", _RAW.c.message_key.is_(None),
                   sa.tuple_(_RAW.c.received_at, _RAW.c.id) > _AFTER)
            .order_by(_RAW.c.received_at, _RAW.c.id).limit(_PAGE))
_SET_KEY = sa.update(_RAW).where(_RAW.c.id == sa.bindparam("raw_id")).values(message_key=sa.bindparam("key"))
# Every key but the first processed with it (by receipt, then id): re-sends, and events stored before the check.
_LATER = sa.text("""
UPDATE raw_message SET message_key = NULL
WHERE message_key IS NOT NULL AND EXISTS (
    SELECT 1 FROM raw_message AS holder WHERE holder.message_key = raw_message.message_key
    AND (holder.received_at < raw_message.received_at
         OR (holder.received_at = raw_message.received_at AND holder.id < raw_message.id)))
""")


def upgrade() -> None:
    connection = op.get_bind()
    _backfill(connection)
    connection.execute(_LATER)
    op.drop_index("ix_raw_message_key", table_name="raw_message")
    op.create_index("ix_raw_message_key", "raw_message", ["message_key"], unique=True, postgresql_where=_PRESENT,
                    sqlite_where=_PRESENT)


def downgrade() -> None:
    op.drop_index("ix_raw_message_key", table_name="raw_message")
    op.create_index("ix_raw_message_key", "raw_message", ["message_key"], postgresql_where=_PRESENT,
                    sqlite_where=_PRESENT)


def _backfill(connection: sa.Connection) -> None:
    """The key of every processed social-care event that has none, a page at a time."""
    after: dict[str, Any] = _BEFORE_ALL
    while rows := connection.execute(_UNKEYED, after).all():
        keys = [{"raw_id": row.id, "key": key} for row in rows if (key := _event_key(bytes(row.content)))]
        if keys:
            connection.execute(_SET_KEY, keys)
        after = {"at": rows[-1].received_at, "id": rows[-1].id}


def _event_key(content: bytes) -> str | None:
    """`socialcare:<ODS>:<event_id>` as the pipeline records it (surrounding spaces ignored, as the event schema
    does); None for content that is not an event (a processed one always is)."""
    try:
        event = json.loads(content)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("provider"), dict):
        return None
    ods, event_id = event["provider"].get("ods_code"), event.get("event_id")
    if not isinstance(ods, str) or not isinstance(event_id, str):
        return None
    return f"socialcare:{ods.strip()}:{event_id.strip()}"
