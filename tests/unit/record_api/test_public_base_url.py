"""SCR_PUBLIC_BASE_URL: validated at start-up, and the base of every absolute URL when set."""

from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from services.record_api.bundles import fhir_base
from services.record_api.settings import RecordApiSettings


@pytest.mark.parametrize(("value", "kept"), [
    ("https://scr.example.nhs.uk", "https://scr.example.nhs.uk"),
    ("https://scr.example.nhs.uk/record/", "https://scr.example.nhs.uk/record"),
    ("http://localhost:8001", "http://localhost:8001"),
    ("", None),
    (None, None),
])
def test_a_public_base_url_is_kept_without_its_trailing_slash(value: str | None, kept: str | None) -> None:
    assert RecordApiSettings(public_base_url=value).public_base_url == kept


@pytest.mark.parametrize("value", ["scr.example.nhs.uk", "ftp://scr.example.nhs.uk", "https://", "https://a/?x=1",
                                   "https://a/#f", "javascript:alert(1)"])
def test_anything_else_is_refused_at_start_up(value: str) -> None:
    with pytest.raises(ValidationError, match="public_base_url"):
        RecordApiSettings(public_base_url=value)


def test_the_fhir_base_is_the_setting_when_set_and_the_request_otherwise() -> None:
    def request(public: str | None) -> SimpleNamespace:
        settings = RecordApiSettings(public_base_url=public)
        return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(runtime=SimpleNamespace(settings=settings))),
                               base_url="http://evil.example/")

    assert fhir_base(request("https://scr.example.nhs.uk")) == "https://scr.example.nhs.uk/fhir"  # type: ignore[arg-type]
    assert fhir_base(request(None)) == "http://evil.example/fhir"  # type: ignore[arg-type]
