"""Record API branch: search rows of one person by parameter, so `$everything`'s duplicate detection reads only
that person's rows whatever the table's size or the planner's statistics.

Revision ID: record_api_0002
Revises: record_api_0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "record_api_0002"
down_revision: str | Sequence[str] | None = "record_api_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_search_person_param", "search_param", ["person_id", "param"])


def downgrade() -> None:
    op.drop_index("ix_search_person_param", table_name="search_param")
