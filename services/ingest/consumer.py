"""The socialcare.events consumer: a background thread in consumer group `ingest`, over Kafka in real mode or
the embedded event log otherwise (shared.events gives both the same interface).

Each event is archived and processed before its offset is committed (once per poll, for the events of that poll
already stored), so a crash redelivers rather than loses it (re-processing is idempotent). A poll's events are
archived in one insert and stored in one transaction, a savepoint each (Pipeline.receive_many), so a bad event
still fails alone. A bad event, or one whose processing keeps failing, goes to socialcare.events.dlq with the
reason and is committed: it never blocks its partition.
"""

from __future__ import annotations

import threading
from typing import Any

import structlog

from services.ingest import metrics
from services.ingest.feeds.socialcare_events import provider_system
from services.ingest.service import Outcome, Pipeline
from services.ingest.settings import IngestSettings
from services.ingest.store import Inbound
from shared.events import Event, EventBus, EventConsumer

log = structlog.get_logger("scr.ingest.consumer")

_BACKOFF_SECONDS = (0.5, 1, 2, 5, 10)


class SocialCareConsumer:
    """Owns one consumer-group member and the thread that drives it."""

    def __init__(self, bus: EventBus, pipeline: Pipeline, settings: IngestSettings) -> None:
        self.bus, self.pipeline, self.settings = bus, pipeline, settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def open(self) -> EventConsumer:
        return self.bus.consumer(self.settings.consumer_group, [self.settings.socialcare_topic])

    def start(self) -> SocialCareConsumer:
        self._thread = threading.Thread(target=self._run, name="socialcare-consumer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30) -> None:
        """Finish the event in hand (or abandon it uncommitted) and leave the group."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self.stopping:
            consumer = self._join()
            if consumer is None:
                return
            try:
                while not self.stopping:
                    self.poll_once(consumer)
            except Exception as exc:
                # A broker fault mid-batch (a commit, the lag read, a rebalance): the consumer's position is already
                # past events it fetched but did not commit, so carrying on would skip them. Leave the group and
                # join again instead: consumption resumes at the last committed offset (re-processing is idempotent).
                log.error("consumer failed; rejoining its group", error_type=type(exc).__name__)
                self._stop.wait(_BACKOFF_SECONDS[2])
            finally:
                try:
                    consumer.close()
                except Exception as exc:  # the broker may be gone; the group notices the member left anyway
                    log.error("consumer did not close cleanly", error_type=type(exc).__name__)

    def _join(self) -> EventConsumer | None:
        """A consumer in the group, retrying until one joins or the service stops."""
        while not self.stopping:
            try:
                return self.open()
            except Exception as exc:  # broker not there yet: keep trying until stopped
                log.error("consumer could not join its group", error_type=type(exc).__name__)
                self._stop.wait(_BACKOFF_SECONDS[-1])
        return None

    def poll_once(self, consumer: EventConsumer) -> int:
        """Handle one poll's worth of events; the number handled and committed."""
        try:
            events = consumer.poll(timeout=self.settings.consumer_poll_seconds)
        except Exception as exc:
            log.error("consumer poll failed", error_type=type(exc).__name__)
            self._stop.wait(_BACKOFF_SECONDS[1])
            return 0
        # Offsets move only past events already stored (or dead-lettered), once per poll rather than once per
        # event: a commit is a round trip to the group coordinator. A crash before it redelivers this poll's events,
        # and storing them again changes nothing.
        handled: list[Event] = []
        try:
            for event, outcome in zip(events, self._receive_all(events), strict=True):
                if not self.handle(event, outcome):
                    break  # stopping: the rest stay uncommitted and are redelivered
                handled.append(event)
        except BaseException:  # commit what was stored; the failure, not a failed commit, is what the caller sees
            consumer.commit_latest_or_log(handled, "ingest-socialcare")
            raise
        consumer.commit_latest(handled)
        for (topic, partition), lag in consumer.lag().items():
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(lag)
        return len(handled)

    def _receive_all(self, events: list[Event]) -> list[Outcome | None]:
        """A poll's events archived and processed as one batch; all None if the archive could not be written
        (each event then tries again on its own in `handle`)."""
        if not events:
            return []
        try:
            return list(self.pipeline.receive_many([self._inbound(event) for event in events]))
        except Exception as exc:
            log.error("events could not be archived", error_type=type(exc).__name__, events=len(events))
            return [None] * len(events)

    def handle(self, event: Event, outcome: Outcome | None = None) -> bool:
        """Store the event (or take the outcome of storing it already), or dead-letter it; True when it may be
        committed, False if stopping first."""
        raw_id = outcome.raw_id if outcome else None
        attempts = 0
        while outcome is not None or not self.stopping:
            if outcome is None:
                try:
                    outcome = self._receive(event) if raw_id is None else self.pipeline.process(raw_id)
                except Exception as exc:  # the archive is unreachable: nothing is stored, so wait and retry
                    log.error("event could not be archived", error_type=type(exc).__name__,
                              partition=event.partition, offset=event.offset)
                    self._stop.wait(_BACKOFF_SECONDS[min(attempts, len(_BACKOFF_SECONDS) - 1)])
                    attempts += 1
                    continue
            raw_id = outcome.raw_id
            if outcome.status == "processed":
                return True
            if outcome.status == "rejected":
                self._dead_letter(event, "not-json" if event.payload is None else "invalid-event", outcome)
                return True
            attempts += 1
            if attempts >= self.settings.consumer_max_attempts:
                self._dead_letter(event, "processing-failed", outcome)
                return True
            self._stop.wait(_BACKOFF_SECONDS[min(attempts, len(_BACKOFF_SECONDS) - 1)])
            outcome = None
        return False

    def _receive(self, event: Event) -> Outcome:
        return self.pipeline.receive_many([self._inbound(event)])[0]

    @staticmethod
    def _inbound(event: Event) -> Inbound:
        detail = {"topic": event.topic, "partition": event.partition, "offset": event.offset}
        return Inbound("socialcare", event.raw, "application/json", sender_system=provider_system(event.payload),
                       detail=detail)

    def _dead_letter(self, event: Event, reason: str, outcome: Outcome) -> None:
        original: Any = event.payload if event.payload is not None else event.raw.decode("utf-8", "replace")
        detail = event.decode_error or outcome.error_text or "processing failed"
        self.bus.publish(self.settings.socialcare_dlq_topic, event.key, {
            "reason": reason, "detail": detail, "original_topic": event.topic, "partition": event.partition,
            "offset": event.offset, "original": original, "raw_message_id": outcome.raw_id})
        self.bus.flush()  # the dead letter is durable before the offset moves past the event
        metrics.DLQ.labels(reason).inc()
        log.info("event dead-lettered", reason=reason, partition=event.partition, offset=event.offset)
