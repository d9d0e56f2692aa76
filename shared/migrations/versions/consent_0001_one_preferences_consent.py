"""Consent branch: at most one citizen-preferences Consent per NHS number, so two devices creating a citizen's
first preferences at the same moment cannot both succeed (the loser gets 412, as for any stale update); and the
indexes behind the citizen's history (by NHS number, newest first) and access log (audit rows by NHS number,
newest first by sequence number).

Revision ID: consent_0001
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "consent_0001"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = ("consent",)
depends_on: str | Sequence[str] | None = None

_ONLY_PREFERENCES = sa.text("kind = 'preferences'")


def upgrade() -> None:
    op.create_index("ux_consent_preferences", "consent", ["nhs_number"], unique=True,
                    postgresql_where=_ONLY_PREFERENCES, sqlite_where=_ONLY_PREFERENCES)
    op.create_index("ix_consent_version_nhs_recorded", "consent_version", ["nhs_number", "recorded_at"])
    op.create_index("ix_audit_nhs_sequence", "audit_event", ["nhs_number", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_nhs_sequence", table_name="audit_event")
    op.drop_index("ix_consent_version_nhs_recorded", table_name="consent_version")
    op.drop_index("ux_consent_preferences", table_name="consent")
