"""HTTP that every FHIR route shares, whatever the route: HEAD is answered as the GET it stands for, without the
body, and a request that accepts only formats other than JSON (FHIR XML, Turtle, HTML) gets 406 with a JSON
OperationOutcome, rather than JSON it did not ask for (FHIR R4 http.html, "Content Types and encodings")."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import Message, Receive, Scope, Send

from shared.fhir import Issue
from shared.service import HttpMiddleware, fhir_error

FHIR_PATHS = "/fhir"


class FhirHttp(HttpMiddleware):
    """Placed inside the access log and the error
    handling so its answers are logged, counted and contained like any other."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "HEAD":  # the same answer, headers (Content-Length, ETag) and audit row as a GET
            scope, send = {**scope, "method": "GET"}, _without_body(send)
        if scope["path"].startswith(FHIR_PATHS) and not accepts_json(scope):
            refusal = fhir_error(406, Issue("only FHIR JSON is served here: send _format=json or Accept: "
                                            "application/fhir+json", code="not-supported"))
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _without_body(send: Send) -> Send:
    async def send_headers_only(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_headers_only


def accepts_json(scope: Scope) -> bool:
    """Whether the request can take JSON: `_format` decides when given (it overrides Accept), else Accept."""
    formats = [v for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1")) if k == "_format"]
    if formats:
        return all(_is_json(f) for f in formats)
    accept = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"accept"), "")
    return not accept.strip() or any(_json_range(r) for r in accept.split(","))


def _is_json(media_type: str) -> bool:
    """`json`, `application/json`, `application/fhir+json` (with parameters), `application/fhir+ndjson`."""
    return "json" in media_type.split(";", 1)[0].strip().lower()


def _json_range(media_range: str) -> bool:
    kind, *parameters = [part.strip().lower() for part in media_range.split(";")]
    refused = any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in parameters)
    return not refused and (kind in ("*/*", "application/*") or _is_json(kind))
