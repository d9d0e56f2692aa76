"""Operator maintenance over what is already stored: rebuild the search index from the bodies, and apply changed
sensitivity code lists to stored records.

Both walk the current resources in primary-key order, a batch per transaction, each batch's rows locked
(`FOR UPDATE`) so an ingest write of the same resource waits for the batch, or the batch for it: neither can put
back rows computed from a body that is no longer current. They can run while the services serve.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from services.ingest import store
from services.ingest.labelling import CodeLists, apply_security, labels_for
from shared.db import transaction
from shared.search import extract

BATCH = 500
Progress = Callable[[dict[str, object]], None]


@dataclass
class ReindexReport:
    resources: int = 0
    search_rows: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"command": "reindex", "resources": self.resources, "search_rows": self.search_rows}


@dataclass
class RelabelReport:
    dry_run: bool
    resources: int = 0
    relabelled: int = 0
    versions: int = 0
    added: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {"command": "relabel", "dry_run": self.dry_run, "resources": self.resources,
                "relabelled": self.relabelled, "versions_relabelled": self.versions, "labels_added": dict(self.added)}


def reindex(sessions: sessionmaker[Session], *, resource_type: str | None = None, batch: int = BATCH,
            progress: Progress | None = None) -> ReindexReport:
    """Replace every current resource's search rows with the ones `shared/search.py` derives from its body now
    (none for a deleted resource)."""
    report = ReindexReport()
    after: tuple[str, str] | None = None
    while True:
        with transaction(sessions) as session:
            rows = store.current_batch(session, after, batch, resource_type=resource_type)
            if not rows:
                return report
            entries = [(row.resource_type, row.id, row.person_id, [] if row.deleted else extract(row.body))
                       for row in rows]
            store.replace_search_rows(session, entries)
        after = (rows[-1].resource_type, rows[-1].id)
        report.resources += len(rows)
        report.search_rows += sum(len(entry[3]) for entry in entries)
        if progress:
            progress(report.as_dict() | {"through": f"{after[0]}/{after[1]}"})


def relabel(sessions: sessionmaker[Session], code_lists: CodeLists, *, dry_run: bool = False,
            batch: int = BATCH, progress: Progress | None = None) -> RelabelReport:
    """Add the labels the code lists now give to every stored version that lacks them (current and history).

    Labels are only ever added: a stored category label may have come from the sender's own `meta.security`,
    which the body no longer tells apart from one the code lists gave, so taking one away is a decision for a
    person (re-send the record), not for this command. As with FHIR's `$meta-add`, security labels change
    without a new version: the version's content is the same, only what may see it has changed."""
    report = RelabelReport(dry_run)
    after: tuple[str, str] | None = None
    while True:
        with transaction(sessions) as session:
            rows = store.current_batch(session, after, batch, lock=not dry_run)
            if not rows:
                return report
            relabelled = {(row.resource_type, row.id): (row, missing) for row in rows
                          if (missing := _missing_labels(row.body, row.labels, code_lists))}
            for version in store.versions_of(session, sorted(relabelled)):
                if missing := _missing_labels(version.body, version.labels, code_lists):
                    report.versions += 1
                    report.added.update(missing)
                    if not dry_run:
                        _add_labels(version, missing)
            if not dry_run:
                for row, missing in relabelled.values():
                    _add_labels(row, missing)
        after = (rows[-1].resource_type, rows[-1].id)
        report.resources += len(rows)
        report.relabelled += len(relabelled)
        if progress:
            progress(report.as_dict() | {"through": f"{after[0]}/{after[1]}"})


def _missing_labels(body: dict, labels: list[str], code_lists: CodeLists) -> set[str]:
    # The stored meta.security is the labels themselves, so labels_for keeps every one of them; the channel is
    # not needed again (its SOC label is already among them).
    return set(labels_for(body, code_lists, channel="")) - set(labels)


def _add_labels(row: store.Labelled, missing: set[str]) -> None:
    labels = sorted(set(row.labels) | missing)
    body = dict(row.body)
    body["meta"] = dict(body.get("meta") or {})
    apply_security(body, labels)
    row.labels, row.body = labels, body
