"""Development signing keys and tokens. Production tokens come from the ICS's identity provider (CIS2,
NHS login, client credentials); the services only ever validate them against SCR_JWKS."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

# Who the dev tokens stand for: realistic claim shapes (DESIGN.md), synthetic people and organisations.
PROFILES: dict[str, dict[str, Any]] = {
    "clinician": {"sub": "555000000001", "scope": "user/*.read", "ods_code": "RR8",
                  "role_code": "S8000:G8000:R8000", "name": "Dr Asha Patel (dev)"},
    "citizen": {"sub": "nhslogin-dev-0001", "nhs_number": "9990000018", "identity_proofing_level": "P9"},
    "feed": {"sub": "feed-gp-Y12345", "scope": "system/*.write", "ods_code": "Y12345"},
    "privacy-officer": {"sub": "555000000009", "scope": "user/AuditEvent.rs", "ods_code": "RR8",
                        "role_code": "S8002:G8003:R5100"},
    "planner": {"sub": "ics-population-health-team", "scope": "system/*.read", "ods_code": "QWO"},
    "record-api": {"sub": "scr-record-api", "scope": "system/Consent.rs system/*.read", "ods_code": "RR8"},
}


def ensure_signing_key(directory: Path) -> tuple[RSAKey, Path]:
    """The dev RSA key (created once) and the public JWKS file the services validate against."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path, jwks_path = directory / "signing-key.json", directory / "jwks.json"
    if private_path.exists():
        key = RSAKey.import_key(json.loads(private_path.read_text()))
    else:
        key = RSAKey.generate_key(2048, parameters={"kid": f"dev-{uuid.uuid4().hex[:8]}", "use": "sig",
                                                    "alg": "RS256"})
        private_path.write_text(json.dumps(key.as_dict(private=True)))
        private_path.chmod(0o600)
    jwks_path.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    return key, jwks_path


def ensure_export_key(directory: Path) -> Path:
    """The dev secret that keys bulk-export pseudonyms (docs/POPULATION.md), created once."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "export-pseudonym.key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path


def mint(key: RSAKey, claims: dict[str, Any], *, issuer: str, audience: str, lifetime: int = 3600,
         algorithm: str = "RS256", header: dict[str, Any] | None = None) -> str:
    now = int(time.time())
    body = {"iss": issuer, "aud": audience, "iat": now, "nbf": now - 5, "exp": now + lifetime,
            "jti": uuid.uuid4().hex} | claims
    return jwt.encode({"alg": algorithm, "kid": key.kid, "typ": "JWT"} | (header or {}), body, key)
