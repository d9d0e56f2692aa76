"""A stand-in for the consent service's decision API (docs/CONTRACTS.md §3), served over real HTTP by uvicorn
in a thread: the record API under test talks to it exactly as it talks to the consent service.

Its default answers follow the platform's rules closely enough for the record API's tests (share by default,
sensitive categories withheld, an objection limits a viewer to their own organisation unless break-glass lifts
it, S-flag means redact-location); a test changes them by editing `objections`/`denied` or replacing `policy`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request

from shared.labels import RESTRICTED, WITHHELD_BY_DEFAULT
from tools.peers.ports import free_port

Policy = Callable[[dict[str, Any]], dict[str, Any]]


class DecisionDouble:
    def __init__(self, expected_token: str) -> None:
        self.expected_token = expected_token
        self.requests: list[dict[str, Any]] = []
        self.objections: set[str] = set()  # NHS numbers whose citizens objected
        self.denied: set[str] = set()  # NHS numbers for which every request is denied
        self.policy: Policy = self.default_policy
        self.port = free_port()
        self._server: uvicorn.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.requests.clear()
        self.objections.clear()
        self.denied.clear()
        self.policy = self.default_policy

    def default_policy(self, request: dict[str, Any]) -> dict[str, Any]:
        nhs = request["patient"]["nhs_number"]
        labels = set(request["labels"])
        answer: dict[str, Any] = {
            "decision": "permit", "own_organisation_only": False,
            "withhold_labels": sorted(labels & WITHHELD_BY_DEFAULT), "allowed_types": None,
            "obligations": ["redact-location"] if RESTRICTED in labels else [], "break_glass": False,
            "break_glass_available": False, "rule": "default-share", "consent": None,
            "reason": "No objection recorded; sensitive categories withheld by default.",
        }
        if nhs in self.denied:
            return answer | {"decision": "deny", "rule": "denied-organisation", "break_glass_available": True,
                             "reason": "The patient has asked that your organisation does not see their record."}
        if nhs in self.objections:
            if request["purpose"] == "ETREAT":
                return answer | {"break_glass": True, "rule": "break-glass-over-objection",
                                 "reason": "Objection lifted by break-glass for vital interests."}
            return answer | {"own_organisation_only": True, "break_glass_available": True, "rule": "objection",
                             "consent": {"id": "consent-1", "version_id": 2, "provision": "Consent.provision"},
                             "reason": "The patient objected to sharing their record."}
        return answer

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.post("/consent/decide")
        async def decide(request: Request, authorization: str = Header(default="")) -> Any:
            if authorization != f"Bearer {self.expected_token}":
                raise HTTPException(401, "bad token")
            body = await request.json()
            self.requests.append(body)
            return self.policy(body)

        return api

    def start(self) -> DecisionDouble:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        threading.Thread(target=self._server.run, daemon=True).start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("decision double did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._server:
            self._server.should_exit = True
