"""Reading what the record API answered: resources in a response, where each came from, audit rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from shared.fhir import ODS_ORG_SYSTEM
from shared.schema import AuditEventRow
from tests.support.record_store import RecordStore


def resources(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The resources a response carries (a Bundle's entries, or the resource itself), outcomes excluded."""
    if body.get("resourceType") == "Bundle":
        found = [e["resource"] for e in body.get("entry", []) if "resource" in e]
    else:
        found = [body]
    return [r for r in found if r.get("resourceType") != "OperationOutcome"]


def ids(body: dict[str, Any]) -> set[str]:
    return {r["id"] for r in resources(body)}


def source_orgs(resource: dict[str, Any]) -> set[str]:
    return {t["code"] for t in resource.get("meta", {}).get("tag", []) if t.get("system") == ODS_ORG_SYSTEM}


def outcome_issues(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for e in body.get("entry", []) if e.get("search", {}).get("mode") == "outcome"
            for i in e["resource"]["issue"]]


def says_items_withheld(body: dict[str, Any]) -> bool:
    """The withheld-items signal: an outcome entry's issue, or on a history Bundle (no outcome entry) a tag."""
    codings = [c for i in outcome_issues(body) for c in i.get("details", {}).get("coding", [])]
    codings += body.get("meta", {}).get("tag", []) if body.get("type") == "history" else []
    return any(c.get("code") == "confidential-items" for c in codings)


def audit_rows(store: RecordStore, **where: Any) -> list[AuditEventRow]:
    with store.sessions() as session:
        statement = select(AuditEventRow).order_by(AuditEventRow.id)
        for column, value in where.items():
            statement = statement.where(getattr(AuditEventRow, column) == value)
        return list(session.scalars(statement))
