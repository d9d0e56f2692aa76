"""Ingest's Prometheus metrics (names fixed by docs/CONTRACTS.md §5)."""

import math
import threading
from collections.abc import Callable, Iterable

import structlog
from prometheus_client import REGISTRY, Counter, Gauge, Metric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = structlog.get_logger("scr.ingest")

MESSAGES = Counter("scr_ingest_messages_total", "Inbound messages by channel and outcome", ["channel", "outcome"])
RESOURCES = Counter("scr_ingest_resources_total", "Resources written by channel and change", ["channel", "change"])
CONSUMER_LAG = Gauge("scr_ingest_consumer_lag", "Events not yet consumed, per topic partition",
                     ["topic", "partition"])
DLQ = Counter("scr_ingest_dlq_total", "Social-care events sent to the dead-letter topic", ["reason"])
REVIEWS_OPEN = Gauge("scr_ingest_match_reviews_open", "Possible matches waiting for review")
MATCH_BLOCKS_CUT = Counter("scr_ingest_match_blocks_cut_total",
                           "New source Patients matched on part of their birth-date block (a placeholder date)")
MLLP_FRAMES_DROPPED = Counter("scr_ingest_mllp_frames_dropped_total",
                              "MLLP frames left unfinished and dropped unanswered, by reason", ["reason"])
CONFLICTS_RETRIED = Counter("scr_ingest_conflicts_retried_total",
                            "Processing attempts rolled back by a transient database conflict and made again, by kind",
                            ["kind"])
SENDER_TIMES_CLAMPED = Counter("scr_ingest_sender_time_clamped_total",
                               "Messages stored with a sender's time later than their receipt (beyond the tolerated "
                               "clock skew), ordered as received: a sender with a clock set wrong", ["channel"])



class RawBacklog(Collector):
    """`scr_ingest_raw_failed` and `scr_ingest_raw_unfinished`, counted in the database (one query for both) when they
    are scraped, so a message cut off mid-processing, or a failure another replica recorded, shows at once. A scrape
    waits for the count at most `wait_seconds` and never starts a second while one is under way: a database that
    drops packets (each connect allowed its connect_timeout) or a pool with no connection free (its pool timeout)
    would otherwise hold /metrics past Prometheus's scrape timeout, and `up` would fall, a false "service down" on top
    of the database alert. A count that fails or is late leaves the last values (NaN before the first), so an alert on
    them neither fires nor resets for the outage; that is logged once per outage, not on every scrape."""

    def __init__(self) -> None:
        self._count: Callable[[], tuple[float, float]] | None = None
        self._wait_seconds = 0.0
        self._lock = threading.Lock()
        self._counted = threading.Event()
        self._counting: threading.Thread | None = None
        self._last: tuple[float, float] = (math.nan, math.nan)
        self._failing = False

    def watch(self, count: Callable[[], tuple[float, float]], wait_seconds: float) -> None:
        """Count (failed, unfinished) with `count` from now on (the app's pipeline, at its start)."""
        self._count, self._wait_seconds = count, wait_seconds

    def describe(self) -> Iterable[Metric]:
        return self._families((math.nan, math.nan))  # registering must not reach the database

    def collect(self) -> Iterable[Metric]:
        counted = self._start_count()
        if counted is not None and not counted.wait(self._wait_seconds):
            self._note_failure("still counting")  # a database that does not answer: the last values, at once
        return self._families(self._last)

    def _start_count(self) -> threading.Event | None:
        """The count under way, or a new one; None before `watch`. One at a time: scrapes of a database that does not
        answer never pile up threads and connections waiting for it."""
        with self._lock:
            if self._count is None:
                return None
            if self._counting is None or not self._counting.is_alive():
                self._counted = threading.Event()
                self._counting = threading.Thread(target=self._run, args=(self._count, self._counted),
                                                  name="raw-backlog-count", daemon=True)
                self._counting.start()
            return self._counted

    def _run(self, count: Callable[[], tuple[float, float]], counted: threading.Event) -> None:
        try:
            failed, unfinished = count()
            self._last = (float(failed), float(unfinished))
        except Exception as exc:
            self._note_failure(type(exc).__name__)
        else:
            if self._failing:
                log.info("raw archive gauges read again")
            self._failing = False
        finally:
            counted.set()

    def _note_failure(self, error_type: str) -> None:
        if not self._failing:
            log.warning("raw archive gauges not read at scrape; reporting their last values", error_type=error_type)
        self._failing = True

    @staticmethod
    def _families(values: tuple[float, float]) -> list[Metric]:
        return [GaugeMetricFamily(name, text, value=value) for (name, text), value in zip(_RAW_GAUGES, values,
                                                                                           strict=True)]


_RAW_GAUGES = (
    ("scr_ingest_raw_failed", "Raw messages whose processing failed and await retry"),
    ("scr_ingest_raw_unfinished",
     "Raw messages still received SCR_RAW_UNFINISHED_AFTER_SECONDS after arrival: processing cut off"),
)
RAW_BACKLOG = RawBacklog()
REGISTRY.register(RAW_BACKLOG)
