"""FHIR Bundles and response shaping: searchset and history Bundles with stable paging links, the
withheld-items signal, and `_elements` / `_summary` subsetting."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import Request

from shared.fhir import LIST_WARNING_SYSTEM
from shared.service import public_base, public_url

# FHIR's own message codes for OperationOutcome.issue.details (MSG_PARAM_UNKNOWN: 'Parameter "%s" not understood').
OPERATION_OUTCOME_SYSTEM = "http://terminology.hl7.org/CodeSystem/operation-outcome"
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
ALWAYS_KEPT = ("resourceType", "id", "meta")


def fhir_base(request: Request) -> str:
    return f"{public_base(request)}/fhir"


def page_url(request: Request, cursor: str | None = None) -> str:
    """This request's URL with the page position replaced (or removed, for the first page)."""
    items = [(k, v) for k, v in request.query_params.multi_items() if k != "_cursor"]
    if cursor:
        items.append(("_cursor", cursor))
    return public_url(request, urlencode(items))


class StoredJson:
    """A resource's body as the JSON text it is stored as: sent out as it is, never parsed and re-serialised,
    when nothing about it changes for the caller (no redaction, no duplicate sources attached)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def entry(base: str, body: dict[str, Any], mode: str | None = "match") -> dict[str, Any]:
    return stored_entry(base, body["resourceType"], body["id"], body, mode)


def stored_entry(base: str, resource_type: str, resource_id: str, body: dict[str, Any] | StoredJson,
                 mode: str | None = "match") -> dict[str, Any]:
    item: dict[str, Any] = {"fullUrl": f"{base}/{resource_type}/{resource_id}", "resource": body}
    if mode:
        item["search"] = {"mode": mode}
    return item


def reference_of(entry_: dict[str, Any]) -> str:
    """`Type/id` of an entry, from its fullUrl (its resource may be unparsed StoredJson)."""
    return "/".join(entry_["fullUrl"].rsplit("/", 2)[-2:])


def encode(payload: dict[str, Any]) -> bytes:
    """The payload as compact JSON, with each StoredJson spliced in as its text: orjson writes it (with the stored
    text as a Fragment), ten times as fast as `json` on a long `$everything`, which spent a tenth of its time here.
    What orjson will not write (integers beyond 64 bits, non-string keys) goes the slower way, by `json`."""
    try:
        return orjson.dumps(payload, default=_fragment)
    except TypeError:
        return _encode_with_json(payload)


def _fragment(value: Any) -> orjson.Fragment:
    if not isinstance(value, StoredJson):
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")
    return orjson.Fragment(value.text)


def _encode_with_json(payload: dict[str, Any]) -> bytes:
    """`json` cannot embed raw text, so each StoredJson is first written as a placeholder string carrying a
    per-response nonce, which no stored value can contain by chance, then replaced by its text."""
    stored: list[str] = []
    nonce = secrets.token_hex(8)

    def placeholder(value: Any) -> str:
        if not isinstance(value, StoredJson):
            raise TypeError(f"{type(value).__name__} is not JSON serialisable")
        stored.append(value.text)
        return f"{nonce}:{len(stored) - 1}"

    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=placeholder)
    if stored:
        text = re.sub(f'"{nonce}:(\\d+)"', lambda m: stored[int(m.group(1))], text)
    return text.encode()


def withheld_issue() -> dict[str, Any]:
    """How UK systems say items were left out (GP Connect's List warning), without saying which or why."""
    return {"severity": "information", "code": "suppressed",
            "details": {"coding": [{"system": LIST_WARNING_SYSTEM, "code": "confidential-items",
                                    "display": "Confidential Items"}],
                        "text": "Items excluded due to confidentiality and/or patient preferences"},
            "diagnostics": "Some items are not shown because of confidentiality and/or the patient's preferences."}


def ignored_issue(names: Sequence[str]) -> dict[str, Any]:
    return {"severity": "warning", "code": "not-supported",
            "details": {"coding": [{"system": OPERATION_OUTCOME_SYSTEM, "code": "MSG_PARAM_UNKNOWN",
                                    "display": f'Parameter "{", ".join(names)}" not understood'}]},
            "diagnostics": f"ignored unknown or unsupported parameter(s): {', '.join(names)} "
                           f"(send Prefer: handling=strict to have them refused)",
            "expression": list(names)}


def unreadable_issue(types: Sequence[str]) -> dict[str, Any]:
    """Included resources of types the token's SMART scopes do not let it read are left out, and said so (only the
    types, which the caller asked for or sees referenced; never whether any such resource exists)."""
    return {"severity": "information", "code": "suppressed",
            "diagnostics": f"_include/_revinclude resources of type(s) {', '.join(sorted(types))} were left out: the "
                           f"token's SMART scopes do not allow reading them",
            "expression": ["_include", "_revinclude"]}


def outcome_entry(issues: list[dict[str, Any]]) -> dict[str, Any]:
    return {"fullUrl": "urn:scr:outcome", "resource": {"resourceType": "OperationOutcome", "issue": issues},
            "search": {"mode": "outcome"}}


def bundle(kind: str, request: Request, entries: list[dict[str, Any]], *, total: int | None = None,
           next_cursor: str | None = None, previous_cursor: str | None = None,
           issues: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    links = [{"relation": "self", "url": page_url(request, request.query_params.get("_cursor"))}]
    if next_cursor:
        links.append({"relation": "next", "url": page_url(request, next_cursor)})
    if previous_cursor:
        links.append({"relation": "previous", "url": page_url(request, previous_cursor)})
    result: dict[str, Any] = {"resourceType": "Bundle", "type": kind,
                              "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
    if total is not None:
        result["total"] = total
    result["link"] = links
    if issues and kind == "history":
        tag_issues(result, issues)
    elif issues:
        entries = [*entries, outcome_entry(issues)]
    result["entry"] = entries
    return result


def tag_issues(history: dict[str, Any], issues: list[dict[str, Any]]) -> None:
    """Issues of a history Bundle, as `Bundle.meta.tag` codings (each issue's `details`). Not an OperationOutcome
    entry as in a searchset: every history entry is a version, with request and response (R4 bdl-3, bdl-4), and
    `Bundle.issues` is R5 only; nor an HTTP Warning header, which RFC 9111 deprecates and caches drop."""
    tags = history.setdefault("meta", {}).setdefault("tag", [])
    for issue in issues:
        tags += [c for c in issue.get("details", {}).get("coding", []) if c not in tags]


def shape(body: dict[str, Any], elements: Sequence[str] | None, summary: str | None) -> dict[str, Any]:
    """Apply `_elements` (top-level elements named, plus the mandatory ones) or `_summary=data` (no text)."""
    if elements:
        wanted = {e.split(".", 1)[0] for e in elements}
        kept = {k: v for k, v in body.items() if k in ALWAYS_KEPT or k in wanted}
    elif summary == "data" and "text" in body:
        kept = {k: v for k, v in body.items() if k != "text"}
    else:
        return body
    meta = dict(kept.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    kept["meta"] = meta
    return kept
