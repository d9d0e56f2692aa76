"""The record API's client for the consent decision API (`POST /consent/decide`, docs/CONTRACTS.md §3).

Kept behind a one-method interface so the enforcement point does not care how decisions arrive. Every way
the decision service can fail (unreachable, slow, an error status, an answer of the wrong shape, an obligation
this enforcement point cannot honour) raises DecisionUnavailable: access fails closed, never open.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol

import httpx
from pydantic import ValidationError

from services.record_api.schemas import DecideRequest, Decision
from shared.errors import ServiceUnavailable


class DecisionUnavailable(ServiceUnavailable):
    """No usable decision could be had; the request is refused with 503."""


class DecisionService(Protocol):
    def decide(self, request: DecideRequest) -> Decision: ...


class TokenFile:
    """The bearer token in a file the platform rotates; re-read whenever the file changes."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._stamp: tuple[float, int] | None = None
        self._token = ""
        self._lock = threading.Lock()

    def read(self) -> str:
        try:
            stat = os.stat(self.path)
        except OSError:
            raise DecisionUnavailable("the record API's consent token file is missing") from None
        stamp = (stat.st_mtime, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._token, self._stamp = self.path.read_text().strip(), stamp
            if not self._token:
                raise DecisionUnavailable("the record API's consent token file is empty")
            return self._token


class HttpDecisionService:
    """Asks the consent service over HTTP. `transport` lets tests serve a decision double in-process."""

    def __init__(self, base_url: str, token_file: str, timeout: float = 3.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._token = TokenFile(token_file)
        self._client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport)

    def decide(self, request: DecideRequest) -> Decision:
        headers = {"Authorization": f"Bearer {self._token.read()}"}
        try:
            response = self._client.post("/consent/decide", json=request.model_dump(mode="json"), headers=headers)
        except httpx.HTTPError as exc:
            raise DecisionUnavailable(f"the consent decision service is unreachable ({type(exc).__name__})") \
                from None
        if response.status_code != 200:
            raise DecisionUnavailable(f"the consent decision service answered HTTP {response.status_code}")
        return parse_decision(response.content)

    def close(self) -> None:
        self._client.close()


def parse_decision(content: bytes) -> Decision:
    """A validated Decision, or DecisionUnavailable for any answer the enforcement point cannot honour."""
    try:
        decision = Decision.model_validate_json(content)
    except ValidationError as exc:
        raise DecisionUnavailable(f"the consent decision service gave an answer of the wrong shape "
                                  f"({exc.error_count()} problem(s))") from None
    if unknown := decision.unknown_obligations():
        raise DecisionUnavailable(f"the consent decision service asked for obligations this service cannot "
                                  f"honour: {', '.join(sorted(unknown))}")
    return decision
