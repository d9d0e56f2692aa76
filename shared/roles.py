"""National RBAC job-role codes (the R-code of a CIS2 `S…:G…:R…` role) grouped the way access rules use them."""

from __future__ import annotations

# Clinical access roles: may see the clinical record and may break glass with a reason.
CLINICAL: frozenset[str] = frozenset({
    "R8000",  # Clinical Practitioner Access Role
    "R8001",  # Nurse Access Role
    "R8002",  # Nurse Manager Access Role
    "R8003",  # Health Professional Access Role
    "R8016",  # Midwife Access Role
    "R8017",  # Midwife Manager Access Role
    "R0050",  # Consultant
    "R0260",  # General Medical Practitioner
    "R0270",  # Salaried General Practitioner
    "R6200",  # GP Registrar
    "R6300",  # Sessional GP
    "R1981",  # Psychiatrist
})
SOCIAL_CARE: frozenset[str] = frozenset({"R8014"})  # Social Worker Access Role
ADMINISTRATIVE: frozenset[str] = frozenset({
    "R8006",  # Medical Secretary
    "R8008",  # Admin/Clinical Support
    "R8009",  # Receptionist
    "R8010",  # Clerical
    "R8011",  # Clerical Manager
})
PRIVACY_OFFICER: frozenset[str] = frozenset({"R5100"})  # Audit Manager: searches the audit trail
CALDICOTT_GUARDIAN: frozenset[str] = frozenset({"R5105"})
GENERAL_PRACTITIONER: frozenset[str] = frozenset({"R0260", "R0270", "R6200", "R6300"})


def job_role(role_code: str | None) -> str | None:
    """The R-code from a CIS2 role code: 'S8000:G8000:R8000' -> 'R8000'; a bare 'R8000' passes through; anything
    but text (tokens are checked before this, but a role also arrives in decision requests) has no role."""
    if not role_code or not isinstance(role_code, str):
        return None
    return role_code.rsplit(":", 1)[-1].strip().upper() or None


def is_clinical(role: str | None) -> bool:
    return job_role(role) in CLINICAL
