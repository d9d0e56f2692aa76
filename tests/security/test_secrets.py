"""Secrets come only from the environment or mounted files: no setting has a secret default, no private key or
credential is committed, and the development signing key lives where git never looks."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from services.consent.settings import ConsentSettings
from services.ingest.settings import IngestSettings
from services.record_api.settings import RecordApiSettings
from shared.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]
# Names that look like they hold a secret; a token's file or lifetime, a key's file, the JWKS (public keys) do not.
SECRET_NAME = re.compile(r"password|secret|token(?!_file|_lifetime)|(?<!jwks_)key(?!_file|_lists|s)|credential",
                         re.I)


@pytest.mark.parametrize("settings", [ServiceSettings, IngestSettings, ConsentSettings, RecordApiSettings])
def test_no_setting_that_holds_a_secret_has_a_default(settings: type[ServiceSettings]) -> None:
    secret_fields = {name: field for name, field in settings.model_fields.items() if SECRET_NAME.search(name)}
    assert "kafka_sasl_password" in secret_fields  # the check finds what it is looking for
    assert all(field.default is None for field in secret_fields.values()), {
        name: field.default for name, field in secret_fields.items() if field.default is not None}
    # The database URL's default is the embedded SQLite file: no credentials anywhere in code.
    assert settings.model_fields["database_url"].default.startswith("sqlite:///")


def _tracked() -> list[Path]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    return [REPO / n.decode() for n in names if n and (REPO / n.decode()).is_file()]


def test_no_private_key_or_token_is_committed() -> None:
    tracked = _tracked()
    assert len(tracked) > 100
    offenders = []
    for path in tracked:
        if path.suffix in (".pem", ".key", ".p12", ".pfx", ".jks", ".token"):
            offenders.append(f"{path.relative_to(REPO)}: key or token file")
            continue
        text = path.read_text(errors="ignore")
        if re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text):
            offenders.append(f"{path.relative_to(REPO)}: a private key")
        if re.search(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{20,}", text):
            offenders.append(f"{path.relative_to(REPO)}: a signed JWT")
        if path.name.endswith(".json") and '"keys"' in text:
            try:
                keys = json.loads(text).get("keys", [])
            except (ValueError, AttributeError):
                keys = []
            if any(isinstance(k, dict) and "d" in k for k in keys):
                offenders.append(f"{path.relative_to(REPO)}: a JWKS with a private key")
    assert not offenders, offenders


def test_the_development_signing_key_and_tokens_live_outside_version_control() -> None:
    ignored = (REPO / ".gitignore").read_text().split()
    assert "var/" in ignored  # tools/devkeys.py writes var/dev/signing-key.json (mode 600) and the dev tokens there
    from shared.settings import DEV_DIR

    assert DEV_DIR.relative_to(REPO).parts[0] == "var"
