"""Population health routes, for system clients acting for secondary use (docs/POPULATION.md):

* FHIR Bulk Data `$export` under /fhir: kick-off at system, Patient and Group level, the job's status URL (poll
  with GET, cancel with DELETE) and its NDJSON files;
* the aggregates under /population: JSON, and the chart page.

Routes only: parse, authorise (`export_caller`: a system token, audited when refused), call, shape the answer.
Every request that touches data is audited with action `export`, naming no person.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from services.record_api.bundles import fhir_base
from services.record_api.population import delivery, page, store
from services.record_api.population.aggregates import COUNTED_TYPES, MEASURES, parse_dimensions
from services.record_api.population.models import ACTIVE, CANCELLED, FAILED, ExportJob
from services.record_api.resource_types import searchable_types
from shared.audit import AuditRecord, write_audit
from shared.auth import InsufficientScope, Principal, authenticate
from shared.errors import Forbidden, InvalidInput, NotFound, ScrError
from shared.fhir import FHIR_JSON, Issue, operation_outcome
from shared.service import fhir_error, public_url

if TYPE_CHECKING:
    from services.record_api.population.service import Population

fhir_router = APIRouter(prefix="/fhir", tags=["population"])
population_router = APIRouter(prefix="/population", tags=["population"])

NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = frozenset({NDJSON, "application/ndjson", "ndjson"})
PURPOSES = ("HOPERAT", "HRESCH")
# Patient-compartment data. Not Provenance: it is operational metadata pointing at the raw archive, and its targets
# would show that a person has items which were left out. Not DocumentReference: documents are free text (letters
# and summaries carry names and addresses) that no field-level de-identification can make safe.
PATIENT_TYPES = tuple(t for t in searchable_types() if t not in ("Provenance", "AuditEvent", "DocumentReference"))
SYSTEM_ONLY_TYPES = ("Organization", "Location")
GROUP_ID = re.compile(r"^practice-([A-Z0-9]{3,8})$")
FILE_NAME = re.compile(r"^([A-Za-z]{1,64})-(\d{1,6})\.ndjson$")
SINGLE_VALUED = ("_since", "_outputFormat", "_purpose")  # a repeat is refused, never silently ignored
SINCE_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
SINCE_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
RETRY_AFTER_SECONDS = 5
_NO_STORE = {"Cache-Control": "no-store"}


def _population(request: Request) -> Population:
    return request.app.state.population


def _audit(request: Request, principal: Principal, outcome: str, description: str,
           purpose: str | None = None, entities: list[str] | None = None) -> None:
    with _population(request).sessions.begin() as session:
        write_audit(session, AuditRecord(service="record_api", action="export", outcome=outcome,
                                         principal=principal, purpose=purpose, entities=entities or [],
                                         description=description))


def export_caller(request: Request) -> Principal:
    """The enforcement point for population routes: system tokens only; any other caller is audited and refused."""
    principal = authenticate(request)
    if principal.kind != "system":
        _audit(request, principal, "denied", f"population health refused to a {principal.kind} token")
        raise Forbidden(f"bulk export and population aggregates are for system clients acting for secondary use; "
                        f"{principal.kind} tokens may not use them")
    return principal


export_caller.__scr_enforced__ = "export"  # type: ignore[attr-defined]


def _purpose(request: Request) -> str:
    purpose = request.query_params.get("_purpose", "HOPERAT")
    if purpose not in PURPOSES:
        raise InvalidInput("_purpose must be HOPERAT (planning and operations) or HRESCH (research): population "
                           "health data is for secondary use only", expression=["_purpose"])
    return purpose


def _only(request: Request, allowed: set[str]) -> None:
    for name in request.query_params:
        if name not in allowed:
            raise InvalidInput(f"parameter {name!r} is not supported here", expression=[name])


# ---------------------------------------------------------------- $export kick-off


@dataclass(frozen=True)
class _ExportParams:
    types: list[str] | None
    since: datetime | None
    purpose: str


def _export_params(request: Request) -> _ExportParams:
    if "respond-async" not in [p.strip() for p in request.headers.get("prefer", "").split(",")]:
        raise InvalidInput("a bulk export needs the header 'Prefer: respond-async'", expression=["Prefer"])
    _only(request, {"_outputFormat", "_since", "_type", "_purpose"})
    output = request.query_params.get("_outputFormat", NDJSON)
    if output not in OUTPUT_FORMATS:
        raise InvalidInput(f"_outputFormat {output[:60]!r} is not supported; use {NDJSON}",
                           expression=["_outputFormat"])
    for name in SINGLE_VALUED:
        if len(request.query_params.getlist(name)) > 1:
            raise InvalidInput(f"{name} may be given once", expression=[name])
    since = parse_since(request.query_params["_since"]) if "_since" in request.query_params else None
    types = None
    if "_type" in request.query_params:
        types = [t.strip() for value in request.query_params.getlist("_type") for t in value.split(",") if t.strip()]
        if not types:
            raise InvalidInput("_type names no resource type", expression=["_type"])
    return _ExportParams(types, since, _purpose(request))


def parse_since(value: str) -> datetime:
    """`_since`: a FHIR instant (seconds and a time zone) or a FHIR date (its first moment, UTC). Never a search
    prefix: `lt2030-01-01` means "before", and reading it as "after" would silently deliver something else."""
    instant, date_only = SINCE_INSTANT.match(value), SINCE_DATE.match(value)
    try:
        if instant:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        if date_only:
            year, month, day = date_only.groups()
            return datetime(int(year), int(month or 1), int(day or 1), tzinfo=UTC)
    except ValueError:
        pass
    raise InvalidInput(f"_since {value[:40]!r} is not a FHIR instant (2026-01-05T09:00:00Z) or date (2026-01-05); "
                       "search prefixes (gt, lt, eb, ...) are not allowed", expression=["_since"])


def _types(principal: Principal, wanted: list[str] | None, level: str) -> list[str]:
    """The types to export: those asked for (each must be exportable at this level and allowed by the token's
    system scopes), or every exportable type the token may read."""
    exportable = PATIENT_TYPES + (SYSTEM_ONLY_TYPES if level == "system" else ())
    if wanted is None:
        allowed = [t for t in exportable if principal.can(t, "r", contexts=("system",))]
        if not allowed:
            raise InsufficientScope("the token's system scopes allow reading none of the exportable types")
        return allowed
    unknown = [t for t in wanted if t not in exportable]
    if unknown:
        raise InvalidInput(f"_type: {unknown[0][:64]!r} cannot be exported at {level} level", expression=["_type"])
    refused = [t for t in wanted if not principal.can(t, "r", contexts=("system",))]
    if refused:
        raise InsufficientScope(f"the token's system scopes do not allow reading {refused[0]}")
    return list(dict.fromkeys(wanted))


def _kick_off(request: Request, principal: Principal, level: str, group_id: str | None) -> Response:
    params = _export_params(request)
    try:
        types = _types(principal, params.types, level)
    except Forbidden as exc:
        _audit(request, principal, "denied", f"bulk export refused: {exc.message}", params.purpose)
        raise
    population = _population(request)
    job_request = store.JobRequest(level, group_id, types, params.since, params.purpose, principal.subject,
                                   principal.ods_code, public_url(request))
    try:
        job = _queue(population, principal, job_request, group_id)
    except ScrError as exc:  # e.g. no pseudonymisation key: refused, nothing queued, and audited
        _audit(request, principal, "error", f"bulk export refused: {exc.message}", params.purpose)
        raise
    population.queued()
    status_url = f"{fhir_base(request)}/$export-status/{job.id}"
    body = operation_outcome(Issue(f"export job {job.id} accepted; poll {status_url}", severity="information",
                                   code="informational"))
    return JSONResponse(body, status_code=202, media_type=FHIR_JSON, headers={"Content-Location": status_url})


def _queue(population: Population, principal: Principal, job_request: store.JobRequest,
           group_id: str | None) -> ExportJob:
    """Queue the job and audit the request in one transaction: a job exists exactly when its audit row does."""
    types, since = job_request.types, job_request.since
    with population.sessions.begin() as session:
        job = population.queue_export(session, job_request)
        write_audit(session, AuditRecord(
            service="record_api", action="export", outcome="success", principal=principal,
            purpose=job_request.purpose, entities=[f"Group/{group_id}"] if group_id else [],
            description=f"bulk export {job.id} requested: {job_request.level} level, types {','.join(types)}"
                        f"{', since ' + since.isoformat() if since else ''}"))
    return job


@fhir_router.get("/$export")
def export_system(request: Request, principal: Principal = Depends(export_caller)) -> Response:
    return _kick_off(request, principal, "system", None)


@fhir_router.get("/Patient/$export")
def export_patients(request: Request, principal: Principal = Depends(export_caller)) -> Response:
    return _kick_off(request, principal, "patient", None)


@fhir_router.get("/Group/{group_id}/$export")
def export_group(request: Request, group_id: str, principal: Principal = Depends(export_caller)) -> Response:
    if not GROUP_ID.match(group_id):
        raise NotFound(f"Group/{group_id[:64]} is not known: groups are GP practices, 'practice-<ODS code>'",
                       expression=["Group"])
    return _kick_off(request, principal, "group", group_id)


# ---------------------------------------------------------------- status, files, cancel


# Job ids are issued as str(uuid.uuid4()) (store.create_job): anything else names no job. Checked whole, never cut
# to length, so `<id>' OR '1'='1` is not taken for `<id>` (nor written into an audit row as if it were).
JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _job_id(job_id: str) -> str:
    if not JOB_ID.fullmatch(job_id):
        raise NotFound("no such export job for this client")
    return job_id


def _job(request: Request, principal: Principal, job_id: str) -> ExportJob:
    with _population(request).sessions() as session:
        job = store.job_for(session, _job_id(job_id), principal.subject, principal.ods_code)
    if job is None or job.status == CANCELLED:
        raise NotFound("no such export job for this client")
    return job


@fhir_router.get("/$export-status/{job_id}")
def export_status(request: Request, job_id: str, principal: Principal = Depends(export_caller)) -> Response:
    job = _job(request, principal, job_id)
    if job.status in ACTIVE:
        return Response(status_code=202, headers={"X-Progress": job.progress or job.status,
                                                  "Retry-After": str(RETRY_AFTER_SECONDS)} | _NO_STORE)
    if job.status == FAILED:
        return fhir_error(500, Issue(job.error or "the export failed", code="exception"))
    return JSONResponse(_manifest(request, job), headers=_expires(request, job) | _NO_STORE)


def _manifest(request: Request, job: ExportJob) -> dict[str, Any]:
    with _population(request).sessions() as session:
        files = store.output_files(session, job.id)
    base = fhir_base(request)
    moment = store.utc_instant(job.transaction_time)
    return {"transactionTime": moment, "request": job.request_url, "requiresAccessToken": True,
            "output": [{"type": f.resource_type, "url": f"{base}/$export-file/{job.id}/{f.name}", "count": f.count}
                       for f in files],
            "error": []}


def _expires(request: Request, job: ExportJob) -> dict[str, str]:
    """When the files will be purged (SCR_EXPORT_RETENTION_HOURS after the job finished)."""
    if job.finished_at is None:
        return {}
    finished = job.finished_at if job.finished_at.tzinfo else job.finished_at.replace(tzinfo=UTC)
    expires = finished + timedelta(hours=_population(request).settings.export_retention_hours)
    return {"Expires": expires.strftime("%a, %d %b %Y %H:%M:%S GMT")}


@fhir_router.delete("/$export-status/{job_id}")
def export_cancel(request: Request, job_id: str, principal: Principal = Depends(export_caller)) -> Response:
    population = _population(request)
    with population.sessions.begin() as session:
        job = store.job_for(session, _job_id(job_id), principal.subject, principal.ods_code)
        if job is None or job.status == CANCELLED:
            raise NotFound("no such export job for this client")
        store.cancel(session, job)
        write_audit(session, AuditRecord(service="record_api", action="export", outcome="success",
                                         principal=principal, purpose=job.purpose,
                                         description=f"bulk export {job.id} cancelled or deleted"))
    return Response(status_code=202)


@fhir_router.get("/$export-file/{job_id}/{file_name}")
def export_file(request: Request, job_id: str, file_name: str,
                principal: Principal = Depends(export_caller)) -> Response:
    """A file, re-checked against the exclusions in force now (delivery.py): lines about someone who has opted out
    or objected since the job ran, or in a category they have withheld since, are left out. Fail closed: without
    the consent service's answer nothing is served (503)."""
    match = FILE_NAME.match(file_name)
    job = _job(request, principal, job_id)
    population = _population(request)
    with population.sessions() as session:
        if match is None or job.status != store.COMPLETED or not store.file_exists(
                session, job.id, match.group(1), int(match.group(2))):
            raise NotFound("no such file in this export")
    if not principal.can(match.group(1), "r", contexts=("system",)):
        # The recipient's token may have lost a scope since kick-off: each download is judged by the token it carries.
        _audit(request, principal, "denied", f"bulk export {job.id} file {file_name} refused: no system read "
                                             f"scope on {match.group(1)}", job.purpose)
        raise InsufficientScope(f"the token's system scopes do not allow reading {match.group(1)}")
    try:
        current = population.current_exclusions(job.purpose, job.recipient_ods)
    except ScrError as exc:
        _audit(request, principal, "error", f"bulk export {job.id} file {file_name} not served: {exc.message}",
               job.purpose)
        raise
    _audit(request, principal, "success", f"bulk export {job.id} file {file_name} downloaded (re-checked against "
                                          "the secondary-use exclusions in force now)", job.purpose)
    chunks = store.read_file(population.sessions, job.id, match.group(1), int(match.group(2)))
    return StreamingResponse(delivery.deliver(chunks, current.allows), media_type=NDJSON, headers=_NO_STORE)


# ---------------------------------------------------------------- aggregates


def _aggregates_caller(request: Request, principal: Principal) -> None:
    missing = [t for t in ("Patient", *COUNTED_TYPES) if not principal.can(t, "r", contexts=("system",))]
    if missing:
        _audit(request, principal, "denied", "population aggregates refused: no system read scope on "
                                             f"{', '.join(missing)}")
        raise InsufficientScope(f"aggregates count {', '.join(('Patient', *COUNTED_TYPES))}: the token's system "
                                f"scopes must allow reading each (missing {', '.join(missing)})")


def _reference_date(request: Request) -> date:
    raw = request.query_params.get("date")
    if raw is None:
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput("date must be YYYY-MM-DD (the day ages are worked out on)", expression=["date"]) from None


def _tables(request: Request, principal: Principal, breakdowns: list[tuple[str, ...]], purpose: str,
            today: date) -> list[dict[str, Any]]:
    what = "; ".join(" x ".join(b) for b in breakdowns)
    try:
        tables = _population(request).aggregates(purpose=purpose, organisation=principal.ods_code,
                                                 breakdowns=breakdowns, today=today)
    except ScrError as exc:
        _audit(request, principal, "error", f"population aggregates by {what} failed: {exc.message}", purpose)
        raise
    _audit(request, principal, "success", f"population aggregates by {what}", purpose)
    return tables


@population_router.get("/aggregates")
def aggregates(request: Request, principal: Principal = Depends(export_caller)) -> Response:
    """`GET /population/aggregates?dimension=age_band[,deprivation_decile]&_purpose=HOPERAT&date=YYYY-MM-DD`"""
    _aggregates_caller(request, principal)
    _only(request, {"dimension", "_purpose", "date"})
    breakdown = parse_dimensions(request.query_params.get("dimension", "age_band"))
    purpose, today = _purpose(request), _reference_date(request)
    table = _tables(request, principal, [breakdown], purpose, today)[0]
    body = {"purpose": purpose, "generated_at": datetime.now(UTC).isoformat(), "reference_date": today.isoformat(),
            **table}
    return JSONResponse(body, headers=_NO_STORE)


@population_router.get("/aggregates.html")
def aggregates_page(request: Request, principal: Principal = Depends(export_caller)) -> Response:
    """The chart page: `?measure=persons|encounters|open_social_care_episodes|waiting_items&_purpose=`"""
    _aggregates_caller(request, principal)
    _only(request, {"measure", "_purpose", "date"})
    measure = request.query_params.get("measure", "persons")
    if measure not in MEASURES:
        raise InvalidInput(f"measure must be one of {', '.join(MEASURES)}", expression=["measure"])
    purpose, today = _purpose(request), _reference_date(request)
    sections = _tables(request, principal, [(d,) for d in page.PAGE_DIMENSIONS], purpose, today)
    html = page.render(sections, measure=measure, purpose=purpose,
                       threshold=_population(request).settings.population_suppression_threshold,
                       generated=datetime.now(UTC).strftime("%d %B %Y %H:%M UTC"))
    return HTMLResponse(html, headers={"Content-Security-Policy": page.CONTENT_SECURITY_POLICY} | _NO_STORE)
