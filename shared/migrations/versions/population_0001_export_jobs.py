"""Population branch: bulk export jobs and their NDJSON output in bounded chunks, so any record API replica can
run, report on and serve an export (services/record_api/population/models.py).

Revision ID: population_0001
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "population_0001"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = ("population",)
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "population_export_job",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("group_id", sa.String(64)),
        sa.Column("types", _JSON, nullable=False),
        sa.Column("since", _TIME),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("recipient_sub", sa.String(128), nullable=False),
        sa.Column("recipient_ods", sa.String(16)),
        sa.Column("request_url", sa.Text, nullable=False),
        sa.Column("requested_at", _TIME, nullable=False),
        sa.Column("transaction_time", _TIME),
        sa.Column("started_at", _TIME),
        sa.Column("finished_at", _TIME),
        sa.Column("claimed_by", sa.String(128)),
        sa.Column("heartbeat", _TIME),
        sa.Column("progress", sa.String(200)),
        sa.Column("error", sa.Text),
        sa.Column("counts", _JSON, nullable=False),
    )
    op.create_index("ix_population_export_job_status", "population_export_job", ["status", "requested_at"])
    op.create_table(
        "population_export_chunk",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("resource_type", sa.String(64), primary_key=True),
        sa.Column("part", sa.Integer, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("lines", sa.Integer, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("population_export_chunk")
    op.drop_index("ix_population_export_job_status", table_name="population_export_job")
    op.drop_table("population_export_job")
