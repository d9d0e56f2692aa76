"""Errors the shared set lacks, mapped to OperationOutcome by the shared handler like every ScrError."""

from __future__ import annotations

from shared.errors import ScrError


class PreconditionRequired(ScrError):
    """428: an update to an existing record must say which version it was based on (If-Match)."""

    status, code = 428, "required"
