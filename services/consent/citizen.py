"""What the citizen sees: the history of their choices, who looked at their record, and a plain-English account
of what is shared and with whom. Shaping only; the rows come from store.py."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from services.consent import codes, preferences, rules, store
from services.consent.facts import facts_from, utc
from shared.labels import CATEGORIES, WITHHELD_BY_DEFAULT
from shared.schema import AuditEventRow, ConsentRecord, ConsentVersion

ROLE_NAMES = {
    "R8000": "Clinical practitioner", "R8001": "Nurse", "R8002": "Nurse manager", "R8003": "Health professional",
    "R8006": "Medical secretary", "R8008": "Admin and clinical support", "R8009": "Receptionist",
    "R8010": "Clerical staff", "R8011": "Clerical manager", "R8014": "Social worker", "R8016": "Midwife",
    "R8017": "Midwife manager", "R0050": "Consultant", "R0260": "GP", "R0270": "Salaried GP",
    "R6200": "GP registrar", "R6300": "Sessional GP", "R1981": "Psychiatrist", "R5100": "Privacy officer",
    "R5105": "Caldicott Guardian",
}
KIND_NAMES = {"preferences": "Your choices", "dissent": "Objection recorded on your behalf",
              "consent": "Consent to sharing recorded on your behalf",
              "safety-override": "Review of your objection"}
ACTION_NAMES = {"read": "viewed a record", "vread": "viewed a record", "history": "viewed a record's history",
                "search": "searched your record", "everything": "viewed your whole record",
                "export": "exported data", "consent-change": "changed sharing choices",
                "consent-read": "viewed sharing choices", "audit-search": "searched the audit trail"}


# ---------------------------------------------------------------- history


def history(session: Session, nhs_number: str, *, count: int, page: int) -> dict[str, Any]:
    rows = store.history(session, nhs_number, limit=count + 1, offset=(page - 1) * count)
    return {"entries": [history_entry(v, c) for v, c in rows[:count]], "page": page,
            "next_page": page + 1 if len(rows) > count else None}


def history_entry(version: ConsentVersion, consent: ConsentRecord) -> dict[str, Any]:
    """One version of one consent: what it said, when, and who recorded it."""
    body = version.body
    facts = facts_from(id=consent.id, version_id=version.version_id, kind=consent.kind,
                       status=body.get("status", ""), author_kind=consent.author_kind, author_ods=consent.author_ods,
                       author_role=consent.author_role, recorded_at=version.recorded_at, body=body)
    entry: dict[str, Any] = {
        "consent_id": consent.id, "version": version.version_id, "kind": consent.kind,
        "title": KIND_NAMES.get(consent.kind, consent.kind), "status": facts.status,
        "recorded_at": utc(version.recorded_at).isoformat(),
        "recorded_by": {"kind": consent.author_kind, "organisation": consent.author_ods,
                        "role": consent.author_role, "role_name": ROLE_NAMES.get(consent.author_role or "")},
    }
    if consent.kind == "preferences":
        direct_care = "object" if facts.stance == "object" else "share"
        entry["preferences"] = preferences.from_facts(facts, direct_care).as_json()
    else:
        entry["summary"] = _professional_summary(facts.kind, facts.stance, facts.stance_code)
    return entry


def _professional_summary(kind: str, stance: str | None, code: str | None) -> str:
    if kind == "safety-override":
        return ("A GP or Caldicott Guardian decided your record must still be shared for your safety."
                if stance == codes.DECLINED else "A GP or Caldicott Guardian reviewed and upheld your objection.")
    meaning = codes.DISSENT_CODES.get(code or "") or codes.CONSENT_CODES.get(code or "")
    said = "You object to sharing your record" if stance == "object" else "You agree to sharing your record"
    return f"{said} ({meaning})." if meaning else f"{said}."


# ---------------------------------------------------------------- access log


def access_log(session: Session, nhs_number: str, *, count: int, before: int | None) -> dict[str, Any]:
    rows = store.access_log(session, nhs_number, before=before, limit=count + 1)
    entries = [access_entry(row) for row in rows[:count]]
    return {"entries": entries, "next_before": rows[count - 1].id if len(rows) > count else None}


def access_entry(row: AuditEventRow) -> dict[str, Any]:
    """Who looked at what, when and why: references and counts, never content."""
    entities = row.body.get("entity") or []
    what = [e["what"]["reference"] for e in entities if (e.get("what") or {}).get("reference")]
    withheld = [e["description"] for e in entities if e.get("description")]
    return {
        "id": row.id, "when": utc(row.recorded).isoformat(), "service": row.service,
        "who": {"kind": row.actor_kind, "organisation": row.actor_ods, "role": row.actor_role,
                "role_name": ROLE_NAMES.get(row.actor_role or ""), "user": row.actor_user},
        "action": row.action, "action_name": ACTION_NAMES.get(row.action, row.action),
        "what": what, "withheld": withheld, "purpose": row.purpose,
        "break_glass": row.break_glass_reason is not None, "break_glass_reason": row.break_glass_reason,
        "outcome": row.outcome,
    }


# ---------------------------------------------------------------- summary in plain English


def summary(view: Any, policy: rules.Policy) -> dict[str, Any]:
    """The state in force and sentences a citizen can read; `view` is a service.CitizenView."""
    stance = view.standing.stance
    mine = view.preferences
    return {
        "direct_care": {"state": stance.state,
                        "since": stance.decided_by.stated_at.isoformat() if stance.decided_by else None,
                        "recorded_by": stance.decided_by.author_kind if stance.decided_by else None,
                        "organisation": stance.decided_by.author_ods if stance.decided_by else None},
        "categories": [{"code": code, "description": text, "always_withheld": code in WITHHELD_BY_DEFAULT}
                       for code, text in CATEGORIES.items()],
        "statements": statements(stance.state, mine, view.standing, policy),
        "professional_records": [
            {"consent_id": f.id, "kind": f.kind, "title": KIND_NAMES.get(f.kind, f.kind),
             "organisation": f.author_ods, "role_name": ROLE_NAMES.get(f.author_role or ""),
             "since": f.stated_at.isoformat()}
            for f in view.standing.consents.values() if f.author_kind == "professional"],
        "policy": {"break_glass_overrides_objection": policy.break_glass_overrides_objection},
    }


def statements(state: str, mine: preferences.Preferences, standing: rules.Standing,
               policy: rules.Policy) -> list[str]:
    lines = [_direct_care_sentence(state)]
    always = ", ".join(CATEGORIES[c] for c in sorted(WITHHELD_BY_DEFAULT))
    lines.append(f"Some information is always kept private outside the organisation that recorded it: {always}.")
    chosen = [c for c in standing.withheld if c not in WITHHELD_BY_DEFAULT]
    if chosen:
        lines.append(f"You have also kept private: {', '.join(CATEGORIES.get(c, c) for c in sorted(chosen))}.")
    if standing.denied:
        lines.append(f"These organisations cannot see your shared record: {', '.join(sorted(standing.denied))}.")
    lines.append("Receptionists and administrative staff see only your details, appointments and visits. Social "
                 "workers see social care information and a short clinical summary (alerts, allergies, problems "
                 "and medicines).")
    lines.append(_emergency_sentence(state, policy))
    if standing.opt_out is not None or state != "share":
        lines.append("Your information is not used for research or planning.")
    else:
        lines.append("Your information may be used, with safeguards, for research and planning. You can opt out "
                     "below (the National Data Opt-out).")
    return lines


def _direct_care_sentence(state: str) -> str:
    if state == "declined":
        return ("You have objected to sharing, but a GP or Caldicott Guardian decided your record must still be "
                "shared for your safety. Staff caring for you can see your shared care record.")
    if state in ("objection", "upheld"):
        reviewed = " Your objection has been reviewed and upheld." if state == "upheld" else ""
        return ("You have objected to sharing. Each organisation sees only what it recorded itself; others cannot "
                f"see your shared care record.{reviewed}")
    return ("Health and care staff who are caring for you (for example your GP practice, a hospital or a community "
            "team treating you) can see your shared care record.")


def _emergency_sentence(state: str, policy: rules.Policy) -> str:
    base = ("In an emergency, a doctor, nurse or other clinician who gives a reason can see your record even if "
            "they have not treated you before.")
    if state in ("objection", "upheld"):
        base += (" This also applies despite your objection." if policy.break_glass_overrides_objection
                 else " This does not override your objection.")
    return base + " Every emergency access is recorded and shown in your access log."
