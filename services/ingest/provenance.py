"""The Provenance resource written for each ingested message (CONTRACTS.md §1.3)."""

from __future__ import annotations

from typing import Any

from services.ingest.records import Change, WriteContext
from shared.fhir import ODS_ORG_SYSTEM

DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def provenance_for(changed: list[Change], ctx: WriteContext) -> dict[str, Any]:
    """Targets every version the message created or changed; the sender's ODS code is the agent; the raw
    archive entry is the source entity."""
    operation = "CREATE" if all(c.change == "create" for c in changed) else "UPDATE"
    return {
        "resourceType": "Provenance",
        "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Provenance"]},
        "target": [{"reference": f"{c.resource_type}/{c.id}/_history/{c.version_id}"} for c in changed],
        "recorded": ctx.now.isoformat(),
        "activity": {"coding": [{"system": DATA_OPERATION, "code": operation}]},
        "agent": [{"type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "author"}]},
                   "who": {"identifier": {"system": ODS_ORG_SYSTEM, "value": ctx.source_org},
                           "display": ctx.source_system}}],
        "entity": [{"role": "source", "what": {"reference": f"urn:scr:raw:{ctx.raw_id}"}}],
    }
