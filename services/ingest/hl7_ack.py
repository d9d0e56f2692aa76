"""The HL7 ACK for a processed, rejected or failed message (HTTP and MLLP answer the same way)."""

from __future__ import annotations

from services.ingest.feeds.hl7v2_charset import MSH_18
from services.ingest.feeds.hl7v2_message import build_ack
from services.ingest.service import Outcome

# Structural faults and unsupported messages are application rejects (AR); content faults are errors (AE).
_REJECT_CODES = frozenset({"100", "200", "201", "203"})
# So is a character set that cannot be read (MSH-18): like an unsupported version, nothing else can be trusted.
_REJECT_FIELDS = frozenset({MSH_18})
_MSH_7 = ("MSH", 7, 0)  # date/time of message: the sender's time ingest orders by


def ack_for(outcome: Outcome, text: str) -> tuple[str, str]:
    """(MSA-1, the ACK message) for one inbound message."""
    if outcome.status == "processed":
        if outcome.sender_clock_warning:
            # Still AA (stored, not refused), but the engine that sent it learns its clock is wrong, at MSH-7.
            return "AA", build_ack(text, "AA", outcome.sender_clock_warning.diagnostics, _MSH_7, "0", severity="W")
        note = "duplicate of a message already processed" if outcome.duplicate_of else ""
        return "AA", build_ack(text, "AA", note)
    if outcome.status == "rejected":
        code = "AR" if outcome.hl7_code in _REJECT_CODES or outcome.hl7_location in _REJECT_FIELDS else "AE"
        return code, build_ack(text, code, outcome.error_text, outcome.hl7_location, outcome.hl7_code)
    return "AE", build_ack(text, "AE", f"processing failed; archived as {outcome.raw_id} for retry", None, "207")


def reject(text: str, reason: str, error_code: str = "100") -> str:
    """An AR for a message refused before it could be archived (too large)."""
    return build_ack(text, "AR", reason, ("MSH", 0, 0), error_code)
