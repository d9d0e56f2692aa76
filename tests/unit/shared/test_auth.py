import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import RSAKey

from shared.auth import JwksSource, Principal, Scope, TokenValidator, parse_scopes, require
from shared.errors import Forbidden, Unauthenticated
from shared.service import install_error_handlers
from tests.support.tokens import AUDIENCE, ISSUER, TokenFactory


@pytest.fixture
def validator(tokens: TokenFactory) -> TokenValidator:
    return TokenValidator(JwksSource(str(tokens.jwks_path)), ISSUER, AUDIENCE)


@pytest.mark.parametrize(
    ("text", "resource", "interaction", "allowed"),
    [
        ("user/*.read", "Observation", "r", True),
        ("user/*.read", "Observation", "s", True),
        ("user/*.read", "Observation", "c", False),
        ("user/Observation.rs", "Observation", "s", True),
        ("user/Observation.rs", "Condition", "r", False),
        ("system/*.write", "Bundle", "c", True),
        ("system/*.write", "Patient", "r", False),
        ("patient/*.cruds", "Patient", "d", True),
    ],
)
def test_smart_v1_and_v2_scopes(text: str, resource: str, interaction: str, allowed: bool) -> None:
    scope = Scope.parse(text)
    assert scope is not None
    assert scope.allows(resource, interaction) is allowed


@pytest.mark.parametrize("text", ["openid", "user/*", "user/*.rx", "admin/*.read", "user/.read", ""])
def test_malformed_scopes_are_ignored(text: str) -> None:
    assert Scope.parse(text) is None


@pytest.mark.parametrize("text", [
    "user/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
    "user/Patient.rs?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000018",
    "system/*.rs?_security=N",
    "patient/Condition.r?",
])
def test_granular_scopes_grant_nothing(text: str) -> None:
    # Honouring the base of a granular scope would widen it to every resource of the type.
    assert Scope.parse(text) is None


def test_a_token_with_only_granular_scopes_is_refused(tokens: TokenFactory, validator: TokenValidator) -> None:
    granular = "user/Observation.rs?category=laboratory user/Patient.rs?identifier=x|1"
    with pytest.raises(Forbidden, match="no recognised SMART scope"):
        validator.validate(tokens.clinician(scope=granular))
    mixed = validator.validate(tokens.clinician(scope=f"{granular} user/Condition.rs"))
    assert mixed.can("Condition", "s") and not mixed.can("Observation", "s") and not mixed.can("Patient", "r")


def test_scope_list_parsing_accepts_space_separated_or_list() -> None:
    assert len(parse_scopes("user/*.read openid system/*.write")) == 2
    assert len(parse_scopes(["user/*.read"])) == 1


def test_clinician_citizen_and_feed_tokens_become_principals(tokens: TokenFactory, validator: TokenValidator) -> None:
    clinician = validator.validate(tokens.clinician(role="S8000:G8000:R8000"))
    assert (clinician.kind, clinician.role, clinician.ods_code) == ("clinician", "R8000", "RR8")
    citizen = validator.validate(tokens.citizen("9990000026"))
    assert (citizen.kind, citizen.nhs_number, citizen.identity_proofing_level) == ("citizen", "9990000026", "P9")
    feed = validator.validate(tokens.feed())
    assert (feed.kind, feed.ods_code) == ("system", "Y12345")
    assert feed.can("Bundle", "c") and not feed.can("Patient", "r")


def test_the_ods_claim_is_normalised_once_for_every_service(tokens: TokenFactory, validator: TokenValidator) -> None:
    """Identity providers differ in how they write a code; the services compare it with stored codes by equality."""
    assert validator.validate(tokens.clinician(ods=" rr8 ")).ods_code == "RR8"
    assert validator.validate(tokens.feed(ods="y12345")).ods_code == "Y12345"
    assert validator.validate(tokens.system(ods="Rh8 ")).ods_code == "RH8"
    assert validator.validate(tokens.clinician(ods=" rr8 ")).claims["ods_code"] == " rr8 "  # the token as sent
    with pytest.raises(Forbidden, match="ods_code"):  # only spaces: no organisation at all
        validator.validate(tokens.clinician(ods="   "))
    assert validator.validate(tokens.feed(ods=" ")).ods_code is None


@pytest.mark.parametrize("bad", ["expired", "wrong_issuer", "wrong_audience", "wrong_key", "alg_none"])
def test_bad_tokens_are_unauthenticated(bad: str, tokens: TokenFactory, validator: TokenValidator) -> None:
    with pytest.raises(Unauthenticated):
        validator.validate(getattr(tokens, bad)())


def test_garbage_is_unauthenticated(validator: TokenValidator) -> None:
    for garbage in ["abc", "a.b.c", "....", "eyJhbGciOiJSUzI1NiJ9.e30.", "\u00e9\u00e9.\u00e9.\u00e9"]:
        with pytest.raises(Unauthenticated):
            validator.validate(garbage)


def test_user_token_without_role_or_ods_is_forbidden(tokens: TokenFactory, validator: TokenValidator) -> None:
    with pytest.raises(Forbidden):
        validator.validate(tokens.token({"sub": "u", "scope": "user/*.read"}))
    with pytest.raises(Forbidden):
        validator.validate(tokens.no_scope())


@pytest.mark.parametrize(("claim", "value"), [
    ("role_code", ["R8000"]), ("role_code", 8000), ("role_code", "R8000\n"), ("ods_code", ["RR8"]),
    ("ods_code", {"a": 1}), ("ods_code", "R" * 17), ("nhs_number", 9990000018), ("nhs_number", "99900000181"),
    ("nhs_number", "999O000018"),
    ("nhs_number", ["9990000018"]), ("identity_proofing_level", 9), ("scope", 1), ("scope", ["user/*.read", None]),
    ("scp", "x" * 8193), ("scp", ["user/*.read"] * 101), ("legitimate_relationship", []),
    ("legitimate_relationship", {"basis": "self_claimed", "reason": ["x"]}), ("sub", "s" * 256),
])
def test_claims_of_the_wrong_type_or_size_make_the_token_invalid(claim: str, value: object, tokens: TokenFactory,
                                                                 validator: TokenValidator) -> None:
    claims = {"sub": "555000000001", "scope": "user/*.read", "ods_code": "RR8", "role_code": "R8000"}
    with pytest.raises(Unauthenticated, match=f"'{claim.split('.')[0]}"):
        validator.validate(tokens.token(claims | {claim: value}))


def test_claims_of_the_right_type_pass(tokens: TokenFactory, validator: TokenValidator) -> None:
    principal = validator.validate(tokens.clinician(scp=["user/Observation.rs"], scope=None,
                                                    legitimate_relationship={"basis": "self_claimed", "reason": "r"}))
    assert principal.can("Observation", "s") and principal.role == "R8000"
    assert validator.validate(tokens.citizen("9990000018", level="P5")).identity_proofing_level == "P5"
    assert validator.validate(tokens.citizen("999 000 0018")).nhs_number == "999 000 0018"  # as people write it


def test_job_role_of_anything_but_text_is_none() -> None:
    from shared.roles import job_role

    assert job_role(["R8000"]) is None and job_role(8000) is None  # type: ignore[arg-type]
    assert job_role("S8000:G8000:r8000") == "R8000"


def _signed(tokens: TokenFactory, header: dict[str, Any] | None = None, **claims: Any) -> str:
    """A token signed with the trusted key, with exactly these claims (None drops one) and header members."""
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "feed-Y12345", "scope": "system/*.write", "ods_code": "Y12345",
            "iat": now, "exp": now + 600} | claims
    return jwt.encode({"alg": "RS256", "kid": tokens.key.kid} | (header or {}),
                      {k: v for k, v in body.items() if v is not None}, tokens.key)


@pytest.mark.parametrize(("claims", "reason"), [
    (lambda now: {"iat": None, "exp": now + 100 * 365 * 86400}, "iat"),  # a century, no iat
    (lambda now: {"iat": None}, "iat"),  # iat is required even for a short token
    (lambda now: {"exp": 10**20}, "lifetime"),
    (lambda now: {"exp": 10**400}, "lifetime"),  # beyond a float: refused, not an OverflowError
    (lambda now: {"exp": float("nan")}, "NumericDate"),
    (lambda now: {"iat": float("nan")}, "NumericDate"),
    (lambda now: {"exp": float("inf")}, "NumericDate"),
    (lambda now: {"iat": now, "exp": now + 3601}, "lifetime"),
    (lambda now: {"iat": now - 7200, "exp": now + 60}, "lifetime"),
])
def test_tokens_living_longer_than_the_maximum_are_refused(claims: Callable[[int], dict], reason: str,
                                                           tokens: TokenFactory, validator: TokenValidator) -> None:
    with pytest.raises(Unauthenticated, match=reason):
        validator.validate(_signed(tokens, **claims(int(time.time()))))


def test_the_longest_accepted_lifetime_is_the_setting(tokens: TokenFactory) -> None:
    now = int(time.time())
    default = TokenValidator(JwksSource(str(tokens.jwks_path)), ISSUER, AUDIENCE)
    assert default.validate(_signed(tokens, exp=now + 3600)).kind == "system"
    longer = TokenValidator(JwksSource(str(tokens.jwks_path)), ISSUER, AUDIENCE, max_lifetime=8 * 3600)
    assert longer.validate(_signed(tokens, exp=now + 8 * 3600)).kind == "system"
    with pytest.raises(Unauthenticated, match="28800 seconds"):
        longer.validate(_signed(tokens, exp=now + 8 * 3600 + 1))


@pytest.mark.parametrize("typ", [None, "JWT", "jwt", "at+jwt", "AT+JWT", "application/at+jwt"])
def test_access_token_types_are_accepted(typ: str | None, tokens: TokenFactory, validator: TokenValidator) -> None:
    header = {"typ": typ} if typ else {}
    assert validator.validate(_signed(tokens, header)).kind == "system"


@pytest.mark.parametrize("typ", ["secevent+jwt", "logout+jwt", "JOSE", "", "application/jwt+x"])
def test_other_token_types_are_refused(typ: object, tokens: TokenFactory, validator: TokenValidator) -> None:
    with pytest.raises(Unauthenticated, match="typ"):
        validator.validate(_signed(tokens, {"typ": typ}))


def test_missing_jwks_file_is_a_clear_configuration_error(tmp_path) -> None:
    from shared.auth import ConfigurationError

    with pytest.raises(ConfigurationError, match="does not exist"):
        JwksSource(str(tmp_path / "missing.json")).load()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match="not a usable key set"):
        JwksSource(str(tmp_path / "bad.json")).load()


def test_rotated_key_is_picked_up_without_restart(tmp_path) -> None:
    old = TokenFactory(tmp_path)
    validator = TokenValidator(JwksSource(str(old.jwks_path), min_refresh_seconds=0), ISSUER, AUDIENCE)
    assert validator.validate(old.feed()).kind == "system"
    old.key = RSAKey.generate_key(2048, parameters={"kid": "rotated-2", "alg": "RS256"})
    old.jwks_path.write_text(json.dumps({"keys": [old.key.as_dict(private=False)]}))
    assert validator.validate(old.feed()).kind == "system"


def _app(validator: TokenValidator) -> TestClient:
    app = FastAPI()
    app.state.token_validator = validator
    install_error_handlers(app)

    @app.get("/clinical")
    def clinical(p: Principal = Depends(require("clinician", scope=("Observation", "r")))) -> dict:
        return {"who": p.subject}

    @app.post("/feed")
    def feed(p: Principal = Depends(require("system", scope=("Bundle", "c")))) -> dict:
        return {"who": p.subject}

    return TestClient(app)


def test_dependencies_answer_401_and_403_with_operation_outcomes(tokens: TokenFactory,
                                                                 validator: TokenValidator) -> None:
    client = _app(validator)
    assert client.get("/clinical", headers={"Authorization": f"Bearer {tokens.clinician()}"}).status_code == 200
    cases = [
        (client.get("/clinical"), 401),
        (client.get("/clinical", headers={"Authorization": "Basic abc"}), 401),
        (client.get("/clinical", headers={"Authorization": f"Bearer {tokens.expired()}"}), 401),
        (client.get("/clinical", headers={"Authorization": f"Bearer {tokens.feed()}"}), 403),
        (client.get("/clinical", headers={"Authorization": f"Bearer {tokens.clinician(scope='user/Condition.rs')}"}),
         403),
        (client.post("/feed", headers={"Authorization": f"Bearer {tokens.clinician()}"}), 403),
        (client.post("/feed", headers={"Authorization": f"Bearer {tokens.feed(scope='system/*.read')}"}), 403),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["code"] in ("login", "forbidden")
        assert response.headers["content-type"].startswith("application/fhir+json")
    challenges = [response.headers.get("www-authenticate") for response, _status in cases]
    assert challenges == [
        'Bearer realm="scr"',  # no credentials (RFC 6750 §3.1: no error code)
        'Bearer realm="scr"',  # credentials of another scheme: none this service understands
        'Bearer realm="scr", error="invalid_token"',
        None,  # a feed token on a clinicians' route: the kind of caller, not a scope, is wrong
        'Bearer realm="scr", error="insufficient_scope"',
        None,
        'Bearer realm="scr", error="insufficient_scope"',
    ]
