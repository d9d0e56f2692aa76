"""`make run` on other ports (SCR_RUN_PORTS) points the services at each other on those ports."""

import pytest

from tools import run_embedded


def test_the_record_api_finds_consent_on_the_chosen_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCR_RUN_PORTS", "8401,8402,8403")
    monkeypatch.delenv("SCR_CONSENT_URL", raising=False)
    ports = run_embedded._ports()
    assert ports == {"record_api": 8401, "ingest": 8402, "consent": 8403}
    assert run_embedded.service_links(ports) == {"SCR_CONSENT_URL": "http://127.0.0.1:8403"}


def test_the_default_ports_give_the_default_link(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCR_RUN_PORTS", raising=False)
    monkeypatch.delenv("SCR_CONSENT_URL", raising=False)
    assert run_embedded.service_links(run_embedded._ports()) == {"SCR_CONSENT_URL": "http://127.0.0.1:8003"}


def test_a_consent_url_already_set_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCR_RUN_PORTS", "8401,8402,8403")
    monkeypatch.setenv("SCR_CONSENT_URL", "http://consent.elsewhere:9000")
    assert run_embedded.service_links(run_embedded._ports()) == {}
