"""The consent service's FastAPI application factory: routes, the decision point and its cache, and the
background consumers (started and stopped with the app's lifespan)."""

from __future__ import annotations

from fastapi import FastAPI

from services.consent import api, fhir_api, secondary_use
from services.consent.consumers import ConsumerThread, start_consumers
from services.consent.decisions import DecisionPoint
from services.consent.page import install_page
from services.consent.rules import Policy
from services.consent.service import ConsentService
from services.consent.settings import ConsentSettings
from shared import outbox
from shared.events import CONSENT_CHANGED
from shared.outbox import OutboxRelay
from shared.service import Runtime, create_service_app, limit_request_bodies, open_runtime


def create_app(settings: ConsentSettings | None = None) -> FastAPI:
    settings = settings or ConsentSettings()
    runtime = open_runtime(settings)
    decisions = DecisionPoint(runtime.sessions, Policy(settings.break_glass_overrides_objection),
                              settings.consent_cache_size)
    consent = ConsentService(runtime.sessions, decisions, lambda: runtime.bus, settings.service_name)
    consumers: list[ConsumerThread] = []

    def on_start(rt: Runtime) -> None:
        if outbox.relays(rt.bus):
            rt.extras["outbox"] = OutboxRelay(rt.sessions, rt.bus, CONSENT_CHANGED).start()
            consent.on_committed = rt.extras["outbox"].wake
        if settings.consumers_enabled and rt.bus is not None:
            consumers.extend(start_consumers(rt.bus, consent, decisions))

    def on_stop(rt: Runtime) -> None:
        for consumer in consumers:
            consumer.stop()
        consumers.clear()
        relay = rt.extras.pop("outbox", None)
        if relay is not None:  # last: what the consumers committed on the way out is relayed too
            relay.stop()
            consent.on_committed = None

    app = create_service_app(settings, title="Shared care record: consent", on_start=on_start, on_stop=on_stop,
                             runtime=runtime)
    app.state.decision_point = decisions
    app.state.consent_service = consent
    app.include_router(api.router)
    app.include_router(fhir_api.router)
    app.include_router(secondary_use.router)
    install_page(app)
    limit_request_bodies(app, settings.max_body_bytes)
    return app
