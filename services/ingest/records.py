"""Writing one resource version: content hash, provenance stamps in meta, labels, the current row, the
version row and its search rows. Every path that changes a stored resource (ingest, relink, merge) uses it."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import store
from services.ingest.feeds.model import references_in
from services.ingest.labelling import apply_security
from shared.fhir import ODS_ORG_SYSTEM, canonical_json
from shared.schema import Resource
from shared.search import SearchRow, extract

SOURCE_SYSTEM_TAG = "urn:scr:source-system"
_HASHED_META = ("profile", "security")


@dataclass
class Change:
    """One resource a message (or an admin action) touched, and how."""

    resource_type: str
    id: str
    version_id: int
    person_id: str | None
    change: str  # create | update | unchanged | stale | relink
    source_org: str
    entry: int | None = None
    where: str | None = None

    @property
    def changed(self) -> bool:
        return self.change in ("create", "update", "relink")


@dataclass
class WriteContext:
    """Who sent what, when; and the rows waiting to be written together (new resources, versions, search rows)."""

    source_org: str
    source_system: str
    raw_id: str | None
    now: datetime
    pending_search: list[tuple[str, str, str | None, list[SearchRow]]] = field(default_factory=list)
    # Rows written in this transaction, not yet flushed: the session writes them in batches.
    written: dict[tuple[str, str], Resource] = field(default_factory=dict)
    # Resources first created in this transaction and not rewritten since: they have no search rows to delete.
    fresh: set[tuple[str, str]] = field(default_factory=set)
    # Version rows waiting to be written in one statement (shared.db.append_rows) with the search rows.
    pending_versions: list[store.VersionRow] = field(default_factory=list)
    # Resources created since the last flush: written the same way, then held by the session like loaded rows.
    pending_new: list[Resource] = field(default_factory=list)

    def queue(self, row: Resource, rows: list[SearchRow], *, created: bool) -> None:
        """The version row and search rows of a write, for the next flush; a later write of the same resource
        in this transaction replaces its queued search rows (only the current version is searchable)."""
        key = (row.resource_type, row.id)
        if created:
            self.fresh.add(key)
        else:
            self.fresh.discard(key)
            self.pending_search = [e for e in self.pending_search if (e[0], e[1]) != key]
        self.pending_versions.append(store.version_row(row, self.raw_id))
        self.pending_search.append((row.resource_type, row.id, row.person_id, rows))

    def write_queued(self, session: Session) -> None:
        """Write what is queued: new resources, versions, search rows. Until then a new resource is invisible to
        queries (the writer flushes before any query that could need one: matching, merges)."""
        if self.pending_new:
            store.add_resources(session, self.pending_new)
            self.pending_new = []
        if self.pending_versions:
            store.add_versions(session, self.pending_versions)
            self.pending_versions = []
        if self.pending_search:
            store.replace_search_rows(session, self.pending_search, fresh=self.fresh)
            self.pending_search = []


def content_hash(body: dict[str, Any], flags: tuple[str, ...] = ()) -> str:
    """SHA-256 of the mapped resource before id and server meta are stamped (CONTRACTS.md §1.2); `flags` are
    what the source said about it outside the resource (restricted, confidential), so a change there counts."""
    unstamped = {k: v for k, v in body.items() if k not in ("id", "meta")}
    if flags:
        unstamped["_source_flags"] = list(flags)
    meta = {k: v for k, v in (body.get("meta") or {}).items() if k in _HASHED_META}
    if meta:
        unstamped["meta"] = meta
    return hashlib.sha256(canonical_json(unstamped)).hexdigest()


def stamp(body: dict[str, Any], resource_id: str, version: int, labels: list[str], ctx: WriteContext,
          source_org: str, source_system: str) -> dict[str, Any]:
    """The body as stored and served: our id, version, lastUpdated, source, tags and security labels."""
    stamped = dict(body)  # shallow: only id and meta are replaced, and stored bodies are never mutated in place
    stamped["id"] = resource_id
    meta = {k: v for k, v in (body.get("meta") or {}).items() if k == "profile"}
    meta |= {"versionId": str(version), "lastUpdated": ctx.now.isoformat(),
             "source": f"urn:scr:ods:{source_org}:{source_system}",
             "tag": [{"system": ODS_ORG_SYSTEM, "code": source_org},
                     {"system": SOURCE_SYSTEM_TAG, "code": source_system}]}
    stamped["meta"] = meta
    apply_security(stamped, labels)
    return stamped


def write(session: Session, ctx: WriteContext, *, existing: Resource | None, resource_type: str, resource_id: str,
          body: dict[str, Any], labels: list[str], person_id: str | None, source_patient_id: str | None,
          source_key: str | None, source_updated: datetime | None, digest: str | None = None,
          change: str | None = None) -> Change:
    """Store `body` as the next version (or the first) and queue its search rows."""
    version = existing.version_id + 1 if existing else 1
    org = existing.source_org if existing else ctx.source_org
    system = existing.source_system if existing else ctx.source_system
    stored = stamp(body, resource_id, version, labels, ctx, org, system)
    row = existing or Resource(resource_type=resource_type, id=resource_id, source_org=org, source_system=system,
                               source_key=source_key)
    row.version_id, row.person_id, row.source_patient_id = version, person_id, source_patient_id
    row.source_updated = source_updated if source_updated else (existing.source_updated if existing else None)
    row.content_hash = digest or content_hash(body)
    row.labels, row.last_updated, row.deleted, row.body = labels, ctx.now, False, stored
    if existing is None:
        ctx.pending_new.append(row)
    ctx.written[(resource_type, resource_id)] = row
    ctx.queue(row, extract(stored), created=existing is None)
    return Change(resource_type, resource_id, version, person_id, change or ("update" if existing else "create"),
                  org)


def unstamped(row: Resource) -> dict[str, Any]:
    """A stored body without our stamps, as adapters and merges work on it (profile kept)."""
    body = copy.deepcopy(row.body)
    body.pop("id", None)
    meta = {k: v for k, v in (body.pop("meta", None) or {}).items() if k == "profile"}
    if meta:
        body["meta"] = meta
    return body




def unresolved_local_reference(node: Any) -> str | None:
    """A local reference (`urn:scr:...`) left in a body after rewriting: an adapter or message fault."""
    return next((r for r in references_in(node) if r.startswith("urn:scr:") and not r.startswith("urn:scr:raw:")),
                None)
