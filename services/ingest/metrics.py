"""Ingest's Prometheus metrics (names fixed by docs/CONTRACTS.md §5)."""

import math
from collections.abc import Callable

import structlog
from prometheus_client import Counter, Gauge

log = structlog.get_logger("scr.ingest")

MESSAGES = Counter("scr_ingest_messages_total", "Inbound messages by channel and outcome", ["channel", "outcome"])
RESOURCES = Counter("scr_ingest_resources_total", "Resources written by channel and change", ["channel", "change"])
CONSUMER_LAG = Gauge("scr_ingest_consumer_lag", "Events not yet consumed, per topic partition",
                     ["topic", "partition"])
DLQ = Counter("scr_ingest_dlq_total", "Social-care events sent to the dead-letter topic", ["reason"])
RAW_FAILED = Gauge("scr_ingest_raw_failed", "Raw messages whose processing failed and await retry")
RAW_UNFINISHED = Gauge("scr_ingest_raw_unfinished",
                       "Raw messages still received SCR_RAW_UNFINISHED_AFTER_SECONDS after arrival: processing cut off")
REVIEWS_OPEN = Gauge("scr_ingest_match_reviews_open", "Possible matches waiting for review")
MATCH_BLOCKS_CUT = Counter("scr_ingest_match_blocks_cut_total",
                           "New source Patients matched on part of their birth-date block (a placeholder date)")
MLLP_FRAMES_DROPPED = Counter("scr_ingest_mllp_frames_dropped_total",
                              "MLLP frames left unfinished and dropped unanswered, by reason", ["reason"])
CONFLICTS_RETRIED = Counter("scr_ingest_conflicts_retried_total",
                            "Processing attempts rolled back by a transient database conflict and made again, by kind",
                            ["kind"])


def read_at_scrape(gauge: Gauge, read: Callable[[], float]) -> None:
    """Have `gauge` call `read` whenever it is collected, so it shows the database's count at the scrape, not at the
    last event that happened to set it. A failing read (the database away) must not fail /metrics: the gauge keeps its
    last value (NaN before the first), so an alert on it neither fires nor resets for the outage, and the failure is
    logged once per outage, not on every scrape."""
    name = gauge.describe()[0].name
    last, failing = math.nan, False

    def value() -> float:
        nonlocal last, failing
        try:
            last = float(read())
        except Exception as exc:
            if not failing:
                log.warning("gauge not read at scrape; reporting its last value", gauge=name,
                            error_type=type(exc).__name__)
            failing = True
            return last
        if failing:
            log.info("gauge read again", gauge=name)
        failing = False
        return last

    gauge.set_function(value)
