"""JSON logs without patient data, Prometheus metrics, and the /healthz, /readyz, /metrics endpoints.

Access logs record the route template (`/fhir/Patient/{id}`), never the concrete path or query string,
because those carry NHS numbers, names and identifiers.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import structlog
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("scr_http_requests_total", "HTTP requests by service, route template and status",
                   ["service", "method", "route", "status"])
LATENCY = Histogram("scr_http_request_duration_seconds", "HTTP request latency by route template",
                    ["service", "method", "route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

# Client libraries that log, and recover from, their own connection faults from background threads.
LIBRARY_LOGGERS = ("kafka",)


def summarise_library_exceptions(_logger: object, _method: str, event_dict: dict) -> dict:
    """One line, not a traceback, for exceptions a client library logs about itself.

    kafka-python's IO thread logs, for example, a socket it closed under its own reader on shutdown
    (`'NoneType' object has no attribute 'recv'`) with a full traceback; it reconnects or finishes on its own.
    Operators need the fact and the exception type, and a library traceback can quote arbitrary values."""
    if str(event_dict.get("logger", "")).startswith(LIBRARY_LOGGERS) and event_dict.get("exc_info"):
        exc_info = event_dict.pop("exc_info")
        exc = exc_info[1] if isinstance(exc_info, tuple) else sys.exc_info()[1]
        event_dict["error_type"] = type(exc).__name__ if exc is not None else "unknown"
    return event_dict


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route stdlib and structlog output through one JSON renderer on stderr."""
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, summarise_library_exceptions,
                    structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        foreign_pre_chain=shared,
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "kafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True  # it logs raw paths; we log route templates
    structlog.contextvars.bind_contextvars(service=service)


def route_template(scope: Scope) -> str:
    """The matched route's path template (set by the router once it has matched), or a fixed label so unknown
    paths cannot flood metrics. Routers carry their own prefix (`APIRouter(prefix=...)`) so the template is whole."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class AccessLogAndMetrics:
    """ASGI middleware: one access log line (route template, status, duration) and the request metrics.

    Plain ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware runs each request through a
    task group and memory streams, which the profile showed costing more per request than some whole reads."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app, self.service = app, service
        self.log = structlog.get_logger("scr.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, elapsed: float) -> None:
        route, method = route_template(scope), scope["method"]
        REQUESTS.labels(self.service, method, route, str(status)).inc()
        LATENCY.labels(self.service, method, route).observe(elapsed)
        if route not in PUBLIC_PATHS:
            self.log.info("request", method=method, route=route, status=status, duration_ms=round(elapsed * 1000, 2))


def install_observability(app: FastAPI, service: str, readiness: Callable[[], dict[str, str]]) -> None:
    """Add the access log and metrics middleware and the three public operational endpoints."""
    app.add_middleware(AccessLogAndMetrics, service=service)

    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @router.get("/readyz")
    def readyz() -> Response:
        checks = readiness()
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                            status_code=200 if ready else 503)

    @router.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
