"""Record API branch: search rows' text compared bytewise (collation "C") on PostgreSQL, so a string search's
prefix (`family=smi`, the FHIR default) is a range of ix_search_text instead of a filter over every row of that
parameter. Only a "C" collation lets PostgreSQL use a B-tree for a prefix; databases created with another locale
(`en_US.UTF-8`, ICU, even `C.UTF-8` before PostgreSQL 17) could not. The stored text is already case- and
accent-folded, so nothing a search matches changes. PostgreSQL rebuilds the column's index; the table is not
rewritten. SQLite's default collation is bytewise already: nothing to do there.

Revision ID: record_api_0003
Revises: record_api_0002
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "record_api_0003"
down_revision: str | Sequence[str] | None = "record_api_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("search_param", "text", type_=sa.String(length=256, collation="C"),
                        existing_type=sa.String(length=256), existing_nullable=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("search_param", "text", type_=sa.String(length=256),
                        existing_type=sa.String(length=256, collation="C"), existing_nullable=True)
