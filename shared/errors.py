"""Specific error types, each mapped to an HTTP status and a FHIR OperationOutcome in one place."""

from __future__ import annotations


class ScrError(Exception):
    """Base for errors that become an OperationOutcome. `code` is a FHIR issue-type code."""

    status: int = 400
    code: str = "invalid"

    def __init__(self, message: str, *, expression: list[str] | None = None,
                 issues: list[dict] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression
        self.issues = issues


class InvalidInput(ScrError):
    status, code = 400, "invalid"


class UnprocessableResource(ScrError):
    status, code = 422, "processing"


class NotFound(ScrError):
    status, code = 404, "not-found"


class Gone(ScrError):
    status, code = 410, "deleted"


class Conflict(ScrError):
    status, code = 409, "conflict"


class PreconditionFailed(ScrError):
    status, code = 412, "conflict"


class TooLarge(ScrError):
    status, code = 413, "too-costly"


class Unauthenticated(ScrError):
    status, code = 401, "login"


class Forbidden(ScrError):
    status, code = 403, "forbidden"


class ServiceUnavailable(ScrError):
    status, code = 503, "transient"
