"""Signed test tokens for every kind of caller, and the deliberately broken ones the services must refuse."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from joserfc.jwk import RSAKey

from tests.support import data
from tools.devkeys import mint

ISSUER = "https://auth.test.scr.local"
AUDIENCE = "scr-test"


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


class TokenFactory:
    """Mints tokens with a test key whose public half is written to `jwks_path` for the services to trust."""

    def __init__(self, directory: Path) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key-1", "alg": "RS256", "use": "sig"})
        self.other_key = RSAKey.generate_key(2048, parameters={"kid": "test-key-1", "alg": "RS256"})
        self.jwks_path = directory / "jwks.json"
        self.jwks_path.write_text(json.dumps({"keys": [self.key.as_dict(private=False)]}))

    def token(self, claims: dict[str, Any], *, lifetime: int = 600, issuer: str = ISSUER,
              audience: str = AUDIENCE, key: RSAKey | None = None) -> str:
        return mint(key or self.key, claims, issuer=issuer, audience=audience, lifetime=lifetime)

    # -- the callers DESIGN.md names
    def clinician(self, *, ods: str = data.ACUTE_ODS, role: str = "S8000:G8000:R8000",
                  scope: str = "user/*.read", sub: str = "555000000001", **extra: Any) -> str:
        return self.token({"sub": sub, "scope": scope, "ods_code": ods, "role_code": role} | extra)

    def citizen(self, nhs_number: str = data.NHS_NUMBERS[0], *, level: str = "P9", **extra: Any) -> str:
        return self.token({"sub": f"nhslogin-{nhs_number}", "nhs_number": nhs_number,
                           "identity_proofing_level": level} | extra)

    def feed(self, *, ods: str = data.GP_ODS, scope: str = "system/*.write", **extra: Any) -> str:
        return self.token({"sub": f"feed-{ods}", "scope": scope, "ods_code": ods} | extra)

    def system(self, *, scope: str = "system/Consent.rs system/*.read", ods: str = data.ACUTE_ODS) -> str:
        return self.token({"sub": "scr-record-api", "scope": scope, "ods_code": ods})

    # -- tokens every endpoint must refuse
    def expired(self) -> str:
        return self.token({"sub": "u", "scope": "user/*.read system/*.write", "ods_code": data.ACUTE_ODS,
                           "role_code": "R8000"}, lifetime=-3600)

    def wrong_issuer(self) -> str:
        return self.token({"sub": "u", "scope": "system/*.write"}, issuer="https://evil.example.com")

    def wrong_audience(self) -> str:
        return self.token({"sub": "u", "scope": "system/*.write"}, audience="another-service")

    def wrong_key(self) -> str:
        return self.token({"sub": "u", "scope": "system/*.write"}, key=self.other_key)

    def alg_none(self) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u", "exp": now + 600, "scope": "system/*.write"}
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."

    def no_scope(self) -> str:
        return self.token({"sub": "u", "ods_code": data.ACUTE_ODS})
