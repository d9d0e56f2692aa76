"""The ingest service's FastAPI application factory: routes, and the MLLP listener and social-care
consumer started and stopped with the app."""

from __future__ import annotations

import structlog
from fastapi import FastAPI

from services.ingest import metrics
from services.ingest.api import router
from services.ingest.consumer import SocialCareConsumer
from services.ingest.feeds.hl7v2_message import build_ack
from services.ingest.hl7_ack import ack_for, reject
from services.ingest.mllp import MllpServer, Timeouts
from services.ingest.service import Pipeline
from services.ingest.settings import IngestSettings
from shared import outbox
from shared.events import RECORD_CHANGED
from shared.outbox import OutboxRelay
from shared.service import Runtime, create_service_app

log = structlog.get_logger("scr.ingest")


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    app = create_service_app(settings, title="Shared care record: ingest", on_start=lambda rt: _start(rt, settings),
                             on_stop=_stop)
    app.include_router(router)
    return app


def _start(rt: Runtime, settings: IngestSettings) -> None:
    pipeline = Pipeline(rt.sessions, rt.bus, settings)
    rt.extras["pipeline"] = pipeline
    _watch_raw_archive(pipeline)
    try:
        pipeline.refresh_gauges()
    except Exception as exc:  # open reviews are recounted again after every review opened or decided
        log.error("could not read the ingest gauges", error_type=type(exc).__name__)
    if settings.mllp_enabled:
        rt.extras["mllp"] = _start_mllp(pipeline, settings)
    if outbox.relays(rt.bus):
        relay = OutboxRelay(rt.sessions, rt.bus, RECORD_CHANGED, linger_seconds=settings.outbox_linger_seconds).start()
        pipeline.on_committed = relay.wake
        rt.extras["outbox"] = relay
    if settings.consumers_enabled and rt.bus is not None:
        rt.extras["consumer"] = SocialCareConsumer(rt.bus, pipeline, settings).start()


def _watch_raw_archive(pipeline: Pipeline) -> None:
    """The raw archive's backlog gauges are counted in the database at each scrape: a message cut off mid-processing
    (left `received`) is recorded by no event here, and a failure recorded by another replica or retried from the CLI
    would leave this replica's count stale. Each replica reports the whole archive (the alerts take the max)."""
    metrics.RAW_BACKLOG.watch(pipeline.count_backlog, pipeline.settings.raw_gauges_wait_seconds)


def _start_mllp(pipeline: Pipeline, settings: IngestSettings) -> MllpServer | None:
    def on_message(message: bytes) -> bytes:
        text = message.decode("latin-1")
        try:
            outcome = pipeline.receive("mllp", message, content_type="x-application/hl7-v2+er7", sender_org=None,
                                       sender_system=None)
        except Exception as exc:  # not even archived (database down): the sender must send it again
            log.error("mllp message not archived", error_type=type(exc).__name__)
            return build_ack(text, "AE", "not stored: the archive is unavailable; send again", None,
                             "207").encode("utf-8")
        return ack_for(outcome, text)[1].encode("utf-8")

    def too_large(head: bytes) -> bytes:
        return reject(head.decode("latin-1"), f"the message is over {settings.max_hl7_bytes} bytes").encode()

    try:
        timeouts = Timeouts(settings.mllp_idle_timeout_seconds, settings.mllp_frame_timeout_seconds)
        return MllpServer(settings.mllp_host, settings.mllp_port, on_message, too_large, settings.max_hl7_bytes,
                          timeouts).start()
    except OSError as exc:
        # HTTP ingest still works; the operator sees why MLLP does not.
        log.error("mllp listener not started", port=settings.mllp_port, error=exc.strerror or type(exc).__name__)
        return None


def _stop(rt: Runtime) -> None:
    consumer = rt.extras.pop("consumer", None)
    if consumer is not None:
        consumer.stop()
    mllp = rt.extras.pop("mllp", None)
    if mllp is not None:
        mllp.stop()
    relay = rt.extras.pop("outbox", None)
    if relay is not None:  # last: what the consumer and MLLP committed on the way out is relayed too
        relay.stop()
