"""Bearer-token authentication and SMART-scope authorisation for all three services.

Tokens are validated against a JWKS (file or URL) with issuer, audience and expiry checks; nothing here mints
production tokens. Claims follow DESIGN.md: clinicians (CIS2-like: `ods_code`, `role_code`, user scopes),
citizens (NHS login-like: `nhs_number`, `identity_proofing_level`) and feeds/systems (system scopes, `ods_code`).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from fastapi import Request
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from shared import nhs_number, ods
from shared.errors import Forbidden, Unauthenticated
from shared.roles import job_role

Kind = Literal["clinician", "citizen", "system"]
ALLOWED_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]  # never "none", never HMAC
# The `typ` header of an access token: absent, plain JWT, or RFC 9068's at+jwt (the `application/` prefix may be
# left out, RFC 7515 §4.1.9, and the value is compared case-insensitively). Anything else (a security event
# token's `secevent+jwt`, a logout token's `logout+jwt`) is another kind of JWT from the same issuer, never a
# bearer token.
ACCESS_TOKEN_TYPES = frozenset({"jwt", "at+jwt"})
DEFAULT_MAX_LIFETIME_SECONDS = 3600
_LATEST_INSTANT = 2**40  # seconds since 1970: the year 36812, beyond any real token, within a float's precision
_INTERACTIONS = frozenset("cruds")
_V1_ACCESS = {"read": frozenset("rs"), "write": frozenset("cud"), "*": _INTERACTIONS}
# The text claims a Principal is built from, with the most characters each may hold. A claim of another JSON type
# (a list, a number, an object) is refused, never coerced: what reads them downstream treats them as text.
_TEXT_CLAIMS = {"sub": 255, "ods_code": 16, "role_code": 64, "nhs_number": 16, "identity_proofing_level": 8}
# `scope` (RFC 9068: space-separated text) or `scp` (a list at some identity providers, text at others).
_SCOPE_CLAIMS = ("scope", "scp")
_MAX_SCOPE_TEXT = 8192
_MAX_SCOPE_ITEMS = 100
_MAX_SCOPE_LENGTH = 255
_RELATIONSHIP_TEXT = {"basis": 64, "reason": 1000}
_NHS_NUMBER_DIGITS = re.compile(r"[0-9]{10}")


class ConfigurationError(RuntimeError):
    """A setting the service cannot start without is missing or wrong."""


class MissingCredentials(Unauthenticated):
    """No bearer token at all: RFC 6750 §3.1 says the challenge then carries no error code."""


class InsufficientScope(Forbidden):
    """A valid token whose scopes do not cover the request (RFC 6750 `insufficient_scope`)."""


@dataclass(frozen=True)
class Scope:
    """One SMART scope: `user/Observation.rs`, `system/*.write`, `patient/*.read`."""

    context: str  # patient | user | system
    resource_type: str  # a FHIR type or "*"
    interactions: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        """The scope, or None for text that grants nothing here: not a SMART resource scope, or a SMART v2
        granular scope (`user/Observation.rs?category=...|laboratory`). A granular scope grants only what
        matches its query, and no read path filters by that query, so honouring its base would widen it to
        every resource of the type: it is ignored, and a token holding only such scopes is refused."""
        if "/" not in text or "." not in text or "?" in text:
            return None
        context, rest = text.split("/", 1)
        resource_type, access = rest.split(".", 1)
        if context not in ("patient", "user", "system") or not resource_type:
            return None
        interactions = _V1_ACCESS.get(access)
        if interactions is None:
            if not access or set(access) - _INTERACTIONS:
                return None
            interactions = frozenset(access)
        return cls(context, resource_type, interactions)

    def allows(self, resource_type: str, interaction: str) -> bool:
        return self.resource_type in ("*", resource_type) and interaction in self.interactions


def parse_scopes(value: Any) -> tuple[Scope, ...]:
    items = value.split() if isinstance(value, str) else value if isinstance(value, list) else []
    return tuple(s for s in (Scope.parse(i) for i in items if isinstance(i, str)) if s is not None)


@dataclass(frozen=True)
class Principal:
    """Who is calling, as established by a validated token."""

    kind: Kind
    subject: str
    scopes: tuple[Scope, ...] = ()
    ods_code: str | None = None  # normalised (shared.ods): no surrounding spaces, upper case
    role: str | None = None  # the national RBAC job role (R-code)
    nhs_number: str | None = None
    identity_proofing_level: str | None = None
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def can(self, resource_type: str, interaction: str, contexts: tuple[str, ...] = ("user", "system")) -> bool:
        return any(s.context in contexts and s.allows(resource_type, interaction) for s in self.scopes)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """Classify validated claims as a clinician, citizen or system caller; claims of the wrong type or size make
    the token invalid (Unauthenticated, naming the claim)."""
    check_claim_types(claims)
    subject = claims["sub"]
    scopes = parse_scopes(claims.get("scope") or claims.get("scp"))
    if claims.get("nhs_number"):
        return Principal("citizen", subject, scopes, nhs_number=claims["nhs_number"],
                         identity_proofing_level=claims.get("identity_proofing_level"), claims=claims)
    contexts = {s.context for s in scopes}
    role = job_role(claims.get("role_code"))
    # Normalised once here, so every service compares the caller's organisation with stored codes the same way.
    organisation = ods.normalise(claims.get("ods_code") or "") or None
    if "user" in contexts or "patient" in contexts:
        if not role or not organisation:
            raise Forbidden("a user token must carry ods_code and role_code claims")
        return Principal("clinician", subject, scopes, ods_code=organisation, role=role, claims=claims)
    if "system" in contexts:
        return Principal("system", subject, scopes, ods_code=organisation, claims=claims)
    raise InsufficientScope("token carries no recognised SMART scope")


def check_claim_types(claims: dict[str, Any]) -> None:
    """Raise Unauthenticated unless every claim the services read has the JSON type and size they expect. A
    correctly signed token may still carry `role_code: ["R8000"]`; it must be refused here, not fail deep inside
    a request (a 500, or a 503 from an audit row that cannot be written)."""
    for name, limit in _TEXT_CLAIMS.items():
        _check_text(name, claims.get(name), limit)
    if not claims.get("sub"):
        raise Unauthenticated("token claim 'sub' must not be empty")
    # Spaces and dashes as people write it ("999 000 0018") are allowed; whether the check digit is right is the
    # citizen API's question (403), not the token's shape.
    if claims.get("nhs_number") and not _NHS_NUMBER_DIGITS.fullmatch(nhs_number.normalise(claims["nhs_number"])):
        raise Unauthenticated("token claim 'nhs_number' must be an NHS number: a string of 10 digits")
    for name in _SCOPE_CLAIMS:
        _check_scopes(name, claims.get(name))
    _check_relationship(claims.get("legitimate_relationship"))


def _check_text(name: str, value: Any, limit: int) -> None:
    """Absent (or null) passes; anything else must be printable text of at most `limit` characters."""
    if value is None:
        return
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise Unauthenticated(f"token claim {name!r} must be a string of at most {limit} printable characters")


def _check_scopes(name: str, value: Any) -> None:
    """Space-separated text, or a list of scopes, each text."""
    if value is None or isinstance(value, str):
        _check_text(name, value, _MAX_SCOPE_TEXT)
        return
    if not isinstance(value, list) or len(value) > _MAX_SCOPE_ITEMS or not all(isinstance(i, str) for i in value):
        raise Unauthenticated(f"token claim {name!r} must be space-separated scopes or a list of at most "
                              f"{_MAX_SCOPE_ITEMS} scopes")
    for item in value:
        _check_text(name, item, _MAX_SCOPE_LENGTH)


def _check_relationship(value: Any) -> None:
    """`legitimate_relationship` (CONTRACTS.md): an object whose `basis` and `reason` are text."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise Unauthenticated("token claim 'legitimate_relationship' must be an object")
    for member, limit in _RELATIONSHIP_TEXT.items():
        _check_text(f"legitimate_relationship.{member}", value.get(member), limit)


class JwksSource:
    """The keys tokens are checked against, from a file path or URL; re-read when an unknown key id appears."""

    def __init__(self, location: str, min_refresh_seconds: float = 30) -> None:
        self.location = location
        self._keys: KeySet | None = None
        self._loaded_at = 0.0
        self._min_refresh = min_refresh_seconds
        self._lock = threading.Lock()

    def load(self) -> KeySet:
        """Read the JWKS now; raise ConfigurationError with one clear sentence if it cannot be used."""
        try:
            if self.location.startswith(("http://", "https://")):
                data = httpx.get(self.location, timeout=10).raise_for_status().json()
            else:
                data = json.loads(Path(self.location).read_text())
            keys = KeySet.import_key_set(data)
        except FileNotFoundError:
            raise ConfigurationError(f"JWKS file {self.location} does not exist (set SCR_JWKS)") from None
        except PermissionError:
            raise ConfigurationError(f"JWKS file {self.location} is not readable") from None
        except (httpx.HTTPError, json.JSONDecodeError, JoseError, ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"JWKS at {self.location} is not a usable key set: {exc}") from None
        if not keys.keys:
            raise ConfigurationError(f"JWKS at {self.location} holds no keys")
        with self._lock:
            self._keys, self._loaded_at = keys, time.monotonic()
        return keys

    def keys(self, kid: str | None = None) -> KeySet:
        keys = self._keys or self.load()
        unknown_kid = kid and not any(k.kid == kid for k in keys.keys)
        if unknown_kid and time.monotonic() - self._loaded_at > self._min_refresh:
            # Key rotation: look again for the new key, but not on every request.
            with contextlib.suppress(ConfigurationError):
                keys = self.load()
        return keys


class TokenValidator:
    """Turns a bearer token into a Principal, or raises Unauthenticated with the reason."""

    def __init__(self, jwks: JwksSource, issuer: str, audience: str, leeway: int = 30,
                 max_lifetime: int = DEFAULT_MAX_LIFETIME_SECONDS) -> None:
        self.jwks = jwks
        self._leeway, self._max_lifetime = leeway, max_lifetime
        self._registry = JWTClaimsRegistry(
            leeway=leeway,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
        )

    def validate(self, token: str) -> Principal:
        try:
            header = jws.extract_compact(token.encode()).protected  # read kid/alg without trusting them
        except (JoseError, ValueError, UnicodeError) as exc:
            raise Unauthenticated(f"malformed bearer token: {type(exc).__name__}") from None
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise Unauthenticated(f"token algorithm {header.get('alg')!r} is not accepted")
        if not _is_access_token_type(header.get("typ")):
            raise Unauthenticated("token type (typ) is not an access token: absent, JWT or at+jwt are accepted")
        try:
            decoded = jwt.decode(token, self.jwks.keys(header.get("kid")), algorithms=ALLOWED_ALGORITHMS)
        except (JoseError, ValueError) as exc:
            raise Unauthenticated(f"token signature is not valid: {type(exc).__name__}") from None
        try:
            self._registry.validate(decoded.claims)
        except JoseError as exc:
            raise Unauthenticated(f"token rejected: {exc.description or type(exc).__name__}") from None
        self._check_lifetime(decoded.claims)
        return principal_from_claims(decoded.claims)

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        """A token lives at most max_lifetime seconds, from when it was issued (exp - iat) and from now (exp - now,
        so a wrong iat cannot stretch it): a leaked token stays useful for an hour, not for a century, and a key
        can be retired that long after rotation."""
        exp, iat = claims["exp"], claims["iat"]
        longest = self._max_lifetime
        if not (_is_instant(exp) and _is_instant(iat) and exp - iat <= longest):
            raise Unauthenticated(f"token lifetime (exp - iat) is over the {longest} seconds accepted")
        if exp - time.time() > longest + self._leeway:
            raise Unauthenticated(f"token expires more than {longest} seconds from now")


def _is_instant(value: Any) -> bool:
    """A NumericDate arithmetic can be done on: not NaN or infinite (Python's JSON reader accepts both), and not an
    integer too large to become a float (JSON integers have no limit)."""
    finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    return finite and 0 <= value < _LATEST_INSTANT


def _is_access_token_type(typ: Any) -> bool:
    if typ is None:
        return True
    return isinstance(typ, str) and typ.lower().removeprefix("application/") in ACCESS_TOKEN_TYPES


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise MissingCredentials("a bearer token is required")
    return token.strip()


def authenticate(request: Request) -> Principal:
    """FastAPI dependency: the validated caller (app.state.token_validator must be set)."""
    principal = request.app.state.token_validator.validate(bearer_token(request))
    request.state.principal = principal
    return principal


def require(*kinds: Kind, scope: tuple[str, str] | None = None,
            check: Callable[[Principal], str | None] | None = None) -> Callable[[Request], Principal]:
    """A FastAPI dependency admitting only the given kinds of caller, holding `scope` = (type, interaction)
    when given, and passing `check` (which returns a refusal reason or None)."""

    def dependency(request: Request) -> Principal:
        principal = authenticate(request)
        if kinds and principal.kind not in kinds:
            raise Forbidden(f"this endpoint is not available to {principal.kind} tokens")
        if scope and principal.kind != "citizen" and not principal.can(*scope):
            raise InsufficientScope(f"token lacks a scope allowing {scope[1]!r} on {scope[0]}")
        if check and (reason := check(principal)):
            raise Forbidden(reason)
        return principal

    dependency.__scr_auth__ = {"kinds": kinds, "scope": scope}  # type: ignore[attr-defined]
    return dependency
