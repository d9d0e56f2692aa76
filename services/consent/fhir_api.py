"""FHIR `Consent` for professionals at /fhir/Consent: record on a patient's behalf, read, search by NHS number.
Every change and every read is audited."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse

from services.consent.service import ConsentService
from shared import nhs_number
from shared.auth import Principal, require
from shared.errors import InvalidInput
from shared.fhir import FHIR_JSON, NHS_NUMBER_SYSTEM, canonical_system
from shared.service import public_base, public_url

router = APIRouter(prefix="/fhir/Consent", tags=["fhir"])
SEARCH_PARAMS = ("patient:identifier", "patient.identifier")


def _service(request: Request) -> ConsentService:
    return request.app.state.consent_service


def _fhir(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON, headers=headers)


@router.post("")
def create_consent(request: Request, resource: Any = Body(...),
                   principal: Principal = Depends(require("clinician", scope=("Consent", "c")))) -> JSONResponse:
    stored = _service(request).record_professional(principal, resource)
    version = stored["meta"]["versionId"]
    return _fhir(stored, 201, {"Location": f"{public_base(request)}/fhir/Consent/{stored['id']}/_history/{version}",
                               "ETag": f'W/"{version}"'})


@router.get("/{consent_id}")
def read_consent(consent_id: str, request: Request,
                 principal: Principal = Depends(require("clinician", scope=("Consent", "r")))) -> JSONResponse:
    stored = _service(request).read_professional(principal, consent_id)
    return _fhir(stored, headers={"ETag": f'W/"{stored["meta"]["versionId"]}"'})


@router.get("")
def search_consents(request: Request,
                    principal: Principal = Depends(require("clinician", scope=("Consent", "s")))) -> JSONResponse:
    number = _nhs_number_param(request)
    resources = _service(request).search_professional(principal, number)
    return _fhir({"resourceType": "Bundle", "type": "searchset", "total": len(resources),
                  "link": [{"relation": "self", "url": public_url(request)}],
                  "entry": [{"fullUrl": f"{public_base(request)}/fhir/Consent/{r['id']}", "resource": r,
                             "search": {"mode": "match"}} for r in resources]})


def _nhs_number_param(request: Request) -> str:
    unknown = [name for name in request.query_params if name not in SEARCH_PARAMS]
    if unknown:
        raise InvalidInput(f"unsupported search parameter {unknown[0]!r}; search by patient:identifier="
                           f"{NHS_NUMBER_SYSTEM}|<NHS number>", expression=[unknown[0]])
    values = [request.query_params[p] for p in SEARCH_PARAMS if p in request.query_params]
    if len(values) != 1:
        raise InvalidInput(f"search needs exactly one patient:identifier={NHS_NUMBER_SYSTEM}|<NHS number>",
                           expression=["patient:identifier"])
    system, _, value = values[0].rpartition("|")
    if canonical_system(system) != NHS_NUMBER_SYSTEM:
        raise InvalidInput(f"patient:identifier must use the system {NHS_NUMBER_SYSTEM}",
                           expression=["patient:identifier"])
    if problem := nhs_number.problem(value):
        raise InvalidInput(problem, expression=["patient:identifier"])
    return nhs_number.normalise(value)
