"""Ingest's HTTP routes: the feeds (FHIR Bundles, HL7 v2, community CSV, social-care events), the published
event schema, and the admin endpoints (raw archive retry, match reviews, merge undo). Routes only: parse,
authorise, call the pipeline, shape the answer."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from services.ingest import hl7_batch
from services.ingest.feeds.socialcare_events import provider_system
from services.ingest.hl7_ack import ack_for, reject
from services.ingest.records import Change
from services.ingest.schemas import ReviewDecision, socialcare_schema
from services.ingest.service import Outcome, Pipeline
from services.ingest.store import Inbound
from shared.auth import Principal, require
from shared.errors import InvalidInput, TooLarge
from shared.fhir import FHIR_JSON, Issue, operation_outcome
from shared.service import RETRY_AFTER

router = APIRouter(prefix="/ingest", tags=["ingest"])

HL7_MEDIA_TYPE = "x-application/hl7-v2+er7"
ADMIN_TYPE = "IngestAdmin"  # scope system/IngestAdmin.* (named explicitly: a wildcard does not grant it)
_STATUS = {"create": "201 Created", "update": "200 OK", "relink": "200 OK", "unchanged": "200 OK",
           "stale": "200 OK"}
_HTTP_FOR_ISSUE = {"too-costly": 413, "forbidden": 403}
# Social-care events in one JSON array, HL7 v2 messages in one batch: stored in one transaction.
MAX_MESSAGES_PER_REQUEST = 1000


def _sender(principal: Principal) -> str | None:
    return None if principal.ods_code else "a feed token must carry the sending organisation's ods_code"


def _admin(interaction: str) -> Any:
    def check(principal: Principal) -> str | None:
        granted = any(s.context == "system" and s.resource_type == ADMIN_TYPE and interaction in s.interactions
                      for s in principal.scopes)
        return None if granted else f"needs the system/{ADMIN_TYPE}.{interaction} scope"

    return check


def pipeline(request: Request) -> Pipeline:
    return request.app.state.runtime.extras["pipeline"]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body is {declared} bytes; at most {limit} are accepted")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"the body is over {limit} bytes; at most {limit} are accepted")
    if not body:
        raise InvalidInput("the body is empty")
    return bytes(body)


def _source_system(request: Request, principal: Principal) -> str:
    return (request.headers.get("x-source-system") or principal.subject or "unknown")[:128]


def _failure_status(outcomes: list[Outcome]) -> int:
    """Failed messages: 503 when only a transient database fault kept them from being stored (the connection lost
    mid-way, or a conflict with concurrent work that outlasted its retries), as when the database is unreachable
    before archiving (shared.service): the sender's retry will do. Else 500: a fault here, which a resend repeats."""
    return 503 if all(outcome.transient for outcome in outcomes) else 500


def _refusal_status(outcome: Outcome) -> int:
    if outcome.status == "failed":
        return _failure_status([outcome])
    return next((_HTTP_FOR_ISSUE[i.code] for i in outcome.issues if i.code in _HTTP_FOR_ISSUE), 400)


def _headers(status: int, raw_ids: str | None) -> dict[str, str]:
    """X-Raw-Message-Id when there is one, and Retry-After with a 503."""
    return ({"X-Raw-Message-Id": raw_ids} if raw_ids is not None else {}) | (RETRY_AFTER if status == 503 else {})


def _refusal(outcome: Outcome) -> JSONResponse:
    """A rejected or failed message as an OperationOutcome with the right status."""
    status = _refusal_status(outcome)
    return JSONResponse(operation_outcome(outcome.issues), status_code=status, media_type=FHIR_JSON,
                        headers=_headers(status, outcome.raw_id))


# ----------------------------------------------------------------------------------- feeds

@router.post("/fhir")
async def ingest_fhir(request: Request, principal: Principal = Depends(require("system", scope=("Bundle", "c"),
                                                                              check=_sender)),
                      pipe: Pipeline = Depends(pipeline)) -> Response:
    """A batch, transaction or collection Bundle; answers a batch- or transaction-response Bundle."""
    body = await read_body(request, pipe.settings.max_body_bytes)
    outcome = await run_in_threadpool(pipe.receive, "fhir", body, content_type=FHIR_JSON,
                                      sender_org=principal.ods_code, sender_system=_source_system(request, principal))
    if outcome.status != "processed":
        return _refusal(outcome)
    bundle = json.loads(body)
    return JSONResponse(_response_bundle(bundle, outcome), media_type=FHIR_JSON,
                        headers={"X-Raw-Message-Id": outcome.raw_id})


def _response_bundle(bundle: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [{"response": {"status": "400 Bad Request"}} for _ in bundle["entry"]]
    for change in outcome.changes:
        if change.entry is not None and change.where and change.where.startswith("Bundle.entry"):
            warning = outcome.sender_clock_warning if change.entry in outcome.clamped_entries else None
            entries[change.entry] = {"response": _entry_response(change, warning)}
    for rejected in outcome.rejected:
        if rejected.index is not None:
            entries[rejected.index] = {"response": {"status": "400 Bad Request",
                                                    "outcome": operation_outcome(rejected.issues)}}
    kind = "transaction-response" if bundle["type"] == "transaction" else "batch-response"
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def _entry_response(change: Change, warning: Issue | None = None) -> dict[str, Any]:
    """An entry's answer; its outcome says why nothing changed, and warns of a sender's time not believed."""
    response: dict[str, Any] = {"status": _STATUS[change.change],
                                "location": f"{change.resource_type}/{change.id}/_history/{change.version_id}",
                                "etag": f'W/"{change.version_id}"'}
    issues = [warning] if warning else []
    if change.change in ("unchanged", "stale"):
        why = "identical to the stored version" if change.change == "unchanged" else \
            "older than the stored version; not applied"
        issues.append(Issue(why, severity="information", code="informational"))
    if issues:
        response["outcome"] = operation_outcome(issues)
    return response


@router.post("/hl7v2")
async def ingest_hl7v2(request: Request, principal: Principal = Depends(require("system",
                                                                               scope=("Encounter", "c"),
                                                                               check=_sender)),
                       pipe: Pipeline = Depends(pipeline)) -> Response:
    """One HL7 v2 ADT message, answered by its ACK (AA, AE or AR with ERR naming the segment and field); or a
    batch of them (FHS/BHS ... BTS/FTS), answered by an acknowledgment batch with one ACK per message."""
    try:
        body = await read_body(request, pipe.settings.max_body_bytes)
        batch = hl7_batch.is_batch(body)
        if not batch and len(body) > pipe.settings.max_hl7_bytes:
            raise TooLarge(f"the message is {len(body)} bytes; at most {pipe.settings.max_hl7_bytes} are accepted")
    except TooLarge as exc:
        return Response(reject("", exc.message), status_code=413, media_type=HL7_MEDIA_TYPE)
    if batch:
        return await _ingest_hl7_batch(body.decode("latin-1"), principal, pipe)
    outcome = await run_in_threadpool(pipe.receive, "hl7v2", body, content_type=HL7_MEDIA_TYPE,
                                      sender_org=principal.ods_code, sender_system=None)
    code, ack = ack_for(outcome, body.decode("latin-1"))
    status = 200 if code == "AA" else _failure_status([outcome]) if outcome.status == "failed" else 400
    return Response(ack, status_code=status, media_type=HL7_MEDIA_TYPE, headers=_headers(status, outcome.raw_id))


async def _ingest_hl7_batch(text: str, principal: Principal, pipe: Pipeline) -> Response:
    """Every message of the batch archived on its own and stored in order, as a Kafka poll is (one transaction,
    a savepoint each); the envelope refused whole (nothing archived) when it is wrong."""
    try:
        batch = hl7_batch.split(text, max_messages=MAX_MESSAGES_PER_REQUEST)
    except hl7_batch.BatchError as exc:
        status = 413 if isinstance(exc, hl7_batch.BatchTooLarge) else 400
        return Response(hl7_batch.refusal(text, exc), status_code=status, media_type=HL7_MEDIA_TYPE)
    oversized = next((n for n, m in enumerate(batch.messages, 1) if len(m) > pipe.settings.max_hl7_bytes), None)
    if oversized:
        error = hl7_batch.BatchTooLarge(f"message {oversized} of the batch is over {pipe.settings.max_hl7_bytes} "
                                        "bytes; nothing was accepted", "MSH")
        return Response(hl7_batch.refusal(text, error), status_code=413, media_type=HL7_MEDIA_TYPE)
    inbound = [Inbound("hl7v2", m.encode("latin-1"), HL7_MEDIA_TYPE, sender_org=principal.ods_code)
               for m in batch.messages]
    outcomes = await run_in_threadpool(pipe.receive_many, inbound) if inbound else []
    acks = [ack_for(outcome, message) for outcome, message in zip(outcomes, batch.messages, strict=True)]
    accepted = sum(code == "AA" for code, _ in acks)
    if accepted == len(acks):
        status = 200
    else:
        status = 207 if accepted else _failure_status(outcomes) if all(o.status == "failed" for o in outcomes) \
            else 400
    return Response(hl7_batch.acknowledgment(batch, [ack for _, ack in acks]), status_code=status,
                    media_type=HL7_MEDIA_TYPE, headers=_headers(status, None))


@router.post("/community")
async def ingest_community(request: Request, principal: Principal = Depends(require("system",
                                                                                   scope=("Encounter", "c"),
                                                                                   check=_sender)),
                           pipe: Pipeline = Depends(pipeline)) -> Response:
    """A CSV extract of community contacts; bad rows are reported by row number, good rows kept."""
    body = await read_body(request, pipe.settings.max_body_bytes)
    outcome = await run_in_threadpool(pipe.receive, "community", body, content_type="text/csv",
                                      sender_org=principal.ods_code, sender_system=_source_system(request, principal))
    if outcome.status != "processed":
        return _refusal(outcome)
    accepted = len({c.entry for c in outcome.changes if c.entry is not None})
    summary = Issue(f"{accepted} row(s) accepted, {len(outcome.rejected)} row(s) rejected; archived as raw message "
                    f"{outcome.raw_id}", severity="information", code="informational")
    issues = [summary] + _warnings(outcome) + [issue for rejected in outcome.rejected for issue in rejected.issues]
    return JSONResponse(operation_outcome(issues), status_code=200 if accepted else 400, media_type=FHIR_JSON,
                        headers={"X-Raw-Message-Id": outcome.raw_id})


@router.post("/socialcare")
async def ingest_socialcare(request: Request, principal: Principal = Depends(require("system",
                                                                                    scope=("EpisodeOfCare", "c"),
                                                                                    check=_sender)),
                            pipe: Pipeline = Depends(pipeline)) -> Response:
    """One social-care event or a JSON array of them (the same events as topic socialcare.events)."""
    body = await read_body(request, pipe.settings.max_body_bytes)
    events = _split_events(body)
    # One batch, as a Kafka poll: archived together, stored in one transaction with a savepoint per event.
    results = await run_in_threadpool(pipe.receive_many, [
        Inbound("socialcare", raw, "application/json", sender_org=principal.ods_code,
                sender_system=provider_system(event)) for raw, event in events])
    issues = []
    for index, outcome in enumerate(results):
        where = f"event[{index}]" if len(events) > 1 else "event"
        if outcome.status == "processed":
            issues.append(Issue(_accepted(where, outcome), where, "information", "informational"))
            issues += [dataclasses.replace(w, expression=f"{where}.occurred_at") for w in _warnings(outcome)]
        else:
            issues += [Issue(i.diagnostics, f"{where}.{i.expression}" if i.expression else where, code=i.code)
                       for i in outcome.issues]
    accepted = sum(o.status == "processed" for o in results)
    status = 200 if accepted == len(results) else 207 if accepted else _refusal_status(results[0])
    return JSONResponse(operation_outcome(issues), status_code=status, media_type=FHIR_JSON,
                        headers=_headers(status, ", ".join(o.raw_id for o in results)))


def _warnings(outcome: Outcome) -> list[Issue]:
    """A stored message's warnings for its sender: a time not believed (stored and 200, so nothing else says so)."""
    return [outcome.sender_clock_warning] if outcome.sender_clock_warning else []


def _accepted(where: str, outcome: Outcome) -> str:
    resent = f": a re-send of raw message {outcome.duplicate_of}, nothing changed" if outcome.duplicate_of else ""
    return f"{where} accepted as raw message {outcome.raw_id}{resent}"


def _split_events(body: bytes) -> list[tuple[bytes, Any]]:
    """A JSON array becomes one message per event (each archived on its own); anything else is one message. Each
    with its decoded JSON (None when it is not JSON)."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return [(body, None)]
    if isinstance(value, list) and value:
        if len(value) > MAX_MESSAGES_PER_REQUEST:
            raise TooLarge(f"{len(value)} events in one request; at most {MAX_MESSAGES_PER_REQUEST} are accepted")
        return [(_event_bytes(item), item) for item in value]
    return [(body, value)]


def _event_bytes(event: Any) -> bytes:
    """One event of an array as UTF-8 JSON. A string with an unpaired surrogate (`"\\ud800"`) has no UTF-8 form: that
    event is archived with its non-ASCII characters escaped, then refused alone by the adapter, the rest kept."""
    try:
        return json.dumps(event, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(event).encode()


@router.get("/socialcare/schema")
def socialcare_event_schema(_principal: Principal = Depends(require("system", "clinician"))) -> Response:
    """The JSON Schema of a social-care event."""
    return JSONResponse(socialcare_schema(), media_type="application/schema+json")


# ----------------------------------------------------------------------------------- admin

@router.get("/raw")
def list_raw(status: str | None = Query(None, pattern="^(received|processed|failed|rejected|unfinished)$"),
             limit: int = Query(50, ge=1, le=500),
             _principal: Principal = Depends(require("system", check=_admin("r"))),
             pipe: Pipeline = Depends(pipeline)) -> list[dict[str, Any]]:
    """Archived messages, newest first (e.g. ?status=failed; `unfinished`: left `received`, cut off mid-way)."""
    return pipe.list_raw(status, limit)


@router.post("/raw/{raw_id}/retry")
def retry_raw(raw_id: str, _principal: Principal = Depends(require("system", check=_admin("u"))),
              pipe: Pipeline = Depends(pipeline)) -> Response:
    """Process an archived message again (after a fault, or a fix to code lists or mappings)."""
    outcome = pipe.retry(raw_id)
    if outcome.status != "processed":
        return _refusal(outcome)
    return JSONResponse({"raw_id": raw_id, "status": outcome.status,
                         "changes": [_change_json(c) for c in outcome.changes]})


@router.get("/reviews")
def list_reviews(status: str | None = Query("open", pattern="^(open|linked|rejected)$"),
                 limit: int = Query(50, ge=1, le=500),
                 _principal: Principal = Depends(require("system", check=_admin("r"))),
                 pipe: Pipeline = Depends(pipeline)) -> list[dict[str, Any]]:
    """Possible matches waiting for a person's decision, with the per-field explanation."""
    return pipe.list_reviews(status, limit)


@router.post("/reviews/{review_id}")
def resolve_review(review_id: str, decision: ReviewDecision,
                   _principal: Principal = Depends(require("system", check=_admin("u"))),
                   pipe: Pipeline = Depends(pipeline)) -> dict[str, Any]:
    """Link the record to the candidate person (moving its resources) or reject the match."""
    changes = pipe.admin_change("review", review_id=review_id, decision=decision.decision,
                                reviewer=decision.reviewer)
    return {"review_id": review_id, "decision": decision.decision, "changes": [_change_json(c) for c in changes]}


@router.post("/merges/{merge_id}/undo")
def undo_merge(merge_id: str, _principal: Principal = Depends(require("system", check=_admin("u"))),
               pipe: Pipeline = Depends(pipeline)) -> dict[str, Any]:
    """Undo an A40 merge: the retired record returns to its own person."""
    changes = pipe.admin_change("undo-merge", merge_id=merge_id)
    return {"merge_id": merge_id, "undone": True, "changes": [_change_json(c) for c in changes]}


def _change_json(change: Change) -> dict[str, Any]:
    return {"resource_type": change.resource_type, "id": change.id, "version_id": change.version_id,
            "person_id": change.person_id, "change": change.change}
