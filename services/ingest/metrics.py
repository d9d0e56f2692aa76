"""Ingest's Prometheus metrics (names fixed by docs/CONTRACTS.md §5)."""

from prometheus_client import Counter, Gauge

MESSAGES = Counter("scr_ingest_messages_total", "Inbound messages by channel and outcome", ["channel", "outcome"])
RESOURCES = Counter("scr_ingest_resources_total", "Resources written by channel and change", ["channel", "change"])
CONSUMER_LAG = Gauge("scr_ingest_consumer_lag", "Events not yet consumed, per topic partition",
                     ["topic", "partition"])
DLQ = Counter("scr_ingest_dlq_total", "Social-care events sent to the dead-letter topic", ["reason"])
RAW_FAILED = Gauge("scr_ingest_raw_failed", "Raw messages whose processing failed and await retry")
REVIEWS_OPEN = Gauge("scr_ingest_match_reviews_open", "Possible matches waiting for review")
MATCH_BLOCKS_CUT = Counter("scr_ingest_match_blocks_cut_total",
                           "New source Patients matched on part of their birth-date block (a placeholder date)")
MLLP_FRAMES_DROPPED = Counter("scr_ingest_mllp_frames_dropped_total",
                              "MLLP frames left unfinished and dropped unanswered, by reason", ["reason"])
CONFLICTS_RETRIED = Counter("scr_ingest_conflicts_retried_total",
                            "Processing attempts rolled back by a transient database conflict and made again, by kind",
                            ["kind"])
