"""Routes under /consent: the citizen's own preferences, history, access log and summary, and the decision API.

A citizen's NHS number comes only from their token: nothing in a request can point at anyone else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Body, Depends, Header, Request
from fastapi.responses import JSONResponse

from services.consent import citizen
from services.consent.decisions import DecisionPoint
from services.consent.schemas import DecideIn
from services.consent.service import CitizenView, ConsentService
from shared import nhs_number
from shared.auth import Principal, require
from shared.errors import InvalidInput

router = APIRouter(prefix="/consent", tags=["consent"])
MAX_PAGE = 100
_NO_STORE = {"Cache-Control": "no-store"}


def _citizen_claims(principal: Principal) -> str | None:
    if not principal.nhs_number or not nhs_number.is_valid(principal.nhs_number):
        return "the token's nhs_number claim is not a valid NHS number"
    return None


def _proofed_to_p9(principal: Principal) -> str | None:
    if reason := _citizen_claims(principal):
        return reason
    if principal.identity_proofing_level != "P9":
        return "changing your choices needs identity proofing level P9 (high); sign in again with NHS login P9"
    return None


def _citizen(check: Callable[[Principal], str | None]) -> Callable[[Request], Principal]:
    """Admit a citizen passing `check`, with their NHS number in the one form choices are keyed and decided by:
    a token saying "999 000 0018" must reach the same choices as a decision about 9990000018."""
    admitted = require("citizen", check=check)

    def dependency(request: Request) -> Principal:
        principal = admitted(request)
        return replace(principal, nhs_number=nhs_number.normalise(principal.nhs_number or ""))

    dependency.__scr_auth__ = admitted.__scr_auth__  # type: ignore[attr-defined]
    return dependency


citizen_only = _citizen(_citizen_claims)
citizen_p9 = _citizen(_proofed_to_p9)
system_reading_consent = require("system", scope=("Consent", "r"))


def _service(request: Request) -> ConsentService:
    return request.app.state.consent_service


def _decisions(request: Request) -> DecisionPoint:
    return request.app.state.decision_point


def _only_params(request: Request, allowed: set[str]) -> None:
    """Refuse any query parameter we do not read, so no one can believe `?nhs_number=` selects a person."""
    for name in request.query_params:
        if name not in allowed:
            reason = " (your NHS number comes from your sign-in)" if name in ("nhs_number", "patient",
                                                                               "identifier") else ""
            raise InvalidInput(f"unknown query parameter {name!r}{reason}", expression=[name])


def _int_param(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidInput(f"{name} must be a whole number from {low} to {high}", expression=[name])
    return int(raw)


def _document(view: CitizenView, status: int = 200) -> JSONResponse:
    return JSONResponse(view.preferences.as_json(), status_code=status,
                        headers={"ETag": f'W/"{view.version}"'} | _NO_STORE)


@router.get("/me")
def get_my_preferences(request: Request, principal: Principal = Depends(citizen_only)) -> JSONResponse:
    _only_params(request, set())
    return _document(_service(request).citizen_view(principal.nhs_number or ""))


@router.put("/me")
def put_my_preferences(request: Request, document: Any = Body(...),
                       if_match: str | None = Header(default=None, alias="If-Match"),
                       principal: Principal = Depends(citizen_p9)) -> JSONResponse:
    _only_params(request, set())
    view, changed = _service(request).put_preferences(principal, document, if_match)
    return _document(view, 201 if changed and view.version == 1 else 200)


@router.get("/me/history")
def get_my_history(request: Request, principal: Principal = Depends(citizen_only)) -> JSONResponse:
    _only_params(request, {"_count", "page"})
    count = _int_param(request, "_count", 50, 1, MAX_PAGE) or 50
    page = _int_param(request, "page", 1, 1, 1_000_000) or 1
    with request.app.state.runtime.sessions() as session:
        body = citizen.history(session, principal.nhs_number or "", count=count, page=page)
    return JSONResponse(body, headers=_NO_STORE)


@router.get("/me/access-log")
def get_my_access_log(request: Request, principal: Principal = Depends(citizen_only)) -> JSONResponse:
    _only_params(request, {"_count", "before"})
    count = _int_param(request, "_count", 50, 1, MAX_PAGE) or 50
    before = _int_param(request, "before", None, 1, 2**62)
    with request.app.state.runtime.sessions() as session:
        body = citizen.access_log(session, principal.nhs_number or "", count=count, before=before)
    return JSONResponse(body, headers=_NO_STORE)


@router.get("/me/summary")
def get_my_summary(request: Request, principal: Principal = Depends(citizen_only)) -> JSONResponse:
    _only_params(request, set())
    view = _service(request).citizen_view(principal.nhs_number or "")
    body = citizen.summary(view, _decisions(request).policy)
    # The page disables its form, and says why, before a citizen below P9 tries to save.
    refusal = _proofed_to_p9(principal)
    body["changes"] = {"allowed": refusal is None, "reason": refusal}
    return JSONResponse(body, headers=_NO_STORE)


@router.post("/decide")
def decide(body: DecideIn, request: Request, _principal: Principal = Depends(system_reading_consent)) -> JSONResponse:
    return JSONResponse(_decisions(request).decide(body.to_request()).as_json())
