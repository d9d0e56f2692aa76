"""The record API's FastAPI application: the FHIR routes, the enforcement point and its decision cache, and
the consent.changed listener that keeps the cache honest."""

from __future__ import annotations

from fastapi import FastAPI

from services.record_api.api import router
from services.record_api.consent_client import DecisionService, HttpDecisionService
from services.record_api.consent_listener import ConsentChangeListener
from services.record_api.decision_cache import DecisionCache
from services.record_api.enforcement import Enforcer
from services.record_api.negotiation import FhirHttp
from services.record_api.population.service import Population
from services.record_api.settings import RecordApiSettings
from shared.db import make_read_session_factory
from shared.service import Runtime, create_service_app


def create_app(settings: RecordApiSettings | None = None, decisions: DecisionService | None = None) -> FastAPI:
    settings = settings or RecordApiSettings()
    decisions = decisions or HttpDecisionService(settings.consent_url, settings.consent_token_file,
                                                 settings.consent_timeout_seconds)
    cache = DecisionCache(settings.decision_cache_ttl_seconds, settings.decision_cache_size)
    listeners: list[ConsentChangeListener] = []
    population = Population(settings)

    def on_start(rt: Runtime) -> None:
        assert rt.bus is not None
        listener = ConsentChangeListener(rt.bus, cache)
        listener.start()
        listeners.append(listener)
        app.state.consent_listener = listener
        population.start()

    def on_stop(_rt: Runtime) -> None:
        population.stop()
        for listener in listeners:
            listener.stop()
        close = getattr(decisions, "close", None)
        if close:
            close()

    app = create_service_app(settings, title="Shared care record: record API", on_start=on_start, on_stop=on_stop,
                             inner_middleware=[FhirHttp])
    app.state.enforcer = Enforcer(settings, app.state.runtime.sessions, decisions, cache)
    app.state.read_sessions = make_read_session_factory(app.state.runtime.engine)  # the /fhir routes' sessions
    population.install(app)  # before the generic /fhir/{resource_type} routes, so /fhir/$export is matched
    app.include_router(router)
    return app
