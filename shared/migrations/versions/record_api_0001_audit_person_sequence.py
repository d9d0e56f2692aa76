"""Record API branch: audit rows of a person by sequence number, for the hash chain's "previous row" lookup on
every audited read and for privacy officers' newest-first searches by patient (both order by id).

Revision ID: record_api_0001
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "record_api_0001"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = ("record_api",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_audit_person_sequence", "audit_event", ["person_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_person_sequence", table_name="audit_event")
