"""The citizen page end to end in a real headless Chromium (Debian's), against the consent service running as
its own process: sign in, read what is shared, change choices (by mouse and by keyboard alone), see history and
access log, and see each change reflected in the decision API. Data rendered on the page stays inert text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from shared.audit import AuditRecord, write_audit
from shared.auth import Principal
from shared.db import create_db_engine, migrate, transaction
from shared.db import make_session_factory as sessions_for
from tests.support import data
from tests.support.services import service_env
from tests.support.tokens import TokenFactory
from tools.peers.ports import free_port
from tools.processes import ServiceProcess

pytestmark = pytest.mark.browser
PEOPLE = data.synthetic_nhs_numbers(10, start=999_200_000)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('page') / 'scr.db'}"
    migrate(url)
    return url


@pytest.fixture(scope="module")
def service(database: str, tokens: TokenFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("page-log") / "consent.log"
    process = ServiceProcess("consent", free_port(), service_env(tokens, database), log).start()
    try:
        process.wait_ready()
        yield process.url
    finally:
        process.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], errors  # no script errors on any page


def _signed_in(page: Page, url: str, token: str) -> Page:
    page.goto(f"{url}/#token={token}")
    expect(page.get_by_role("heading", name="What is shared and with whom")).to_be_visible()
    return page


def _decide(url: str, tokens: TokenFactory, nhs: str, purpose: str = "TREAT") -> dict[str, Any]:
    body = {"patient": {"nhs_number": nhs, "person_id": "p"}, "purpose": purpose, "labels": ["HIV"],
            "actor": {"kind": "clinician", "ods_code": "RH8", "role_code": "R8000", "user_id": "u"},
            "legitimate_relationship": "care"}
    response = httpx.post(f"{url}/consent/decide", json=body, headers={"Authorization": f"Bearer {tokens.system()}"})
    assert response.status_code == 200, response.text
    return response.json()


def _me(url: str, tokens: TokenFactory, nhs: str) -> dict[str, Any]:
    return httpx.get(f"{url}/consent/me", headers={"Authorization": f"Bearer {tokens.citizen(nhs)}"}).json()


def test_load_object_to_sharing_and_see_it_in_the_decision_api(page: Page, service: str, tokens) -> None:
    nhs = PEOPLE[0]
    _signed_in(page, service, tokens.citizen(nhs))
    assert "token=" not in page.url  # the token leaves the address bar and history at once
    assert page.evaluate("sessionStorage.getItem('scr.citizen.token')")
    expect(page.get_by_role("list").first).to_contain_text("can see your shared care record")
    expect(page.get_by_label("Share my record with staff caring for me (recommended)")).to_be_checked()
    expect(page.get_by_label("HIV/AIDS information (always kept private)")).to_be_disabled()
    assert _decide(service, tokens, nhs)["rule"] == "default-share"

    page.get_by_label("I object: only the organisation that recorded something may see it").check()
    page.get_by_role("button", name="Save my choices").click()
    expect(page.get_by_role("status")).to_have_text(re.compile("Your choices have been saved"))
    expect(page.locator("#statements")).to_contain_text("You have objected to sharing")
    expect(page.locator("#history tbody tr")).to_have_count(1)
    expect(page.locator("#access-log tbody")).to_contain_text("changed sharing choices")

    decision = _decide(service, tokens, nhs)
    assert (decision["rule"], decision["own_organisation_only"]) == ("objection", True)


def test_keyboard_alone_can_opt_out_of_research_and_save(page: Page, service: str, tokens) -> None:
    nhs = PEOPLE[1]
    _signed_in(page, service, tokens.citizen(nhs))

    def tab_to(element_id: str) -> None:
        for _ in range(60):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
                return
        raise AssertionError(f"could not reach #{element_id} with the keyboard")

    tab_to("national-data-opt-out")
    page.keyboard.press("Space")
    expect(page.locator("#national-data-opt-out")).to_be_checked()
    outline = page.evaluate("getComputedStyle(document.activeElement).backgroundColor")
    assert outline == "rgb(255, 235, 59)"  # the focus style is visible
    tab_to("save")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text(re.compile("Your choices have been saved"))
    assert _decide(service, tokens, nhs, "HRESCH")["rule"] == "national-data-opt-out"
    assert _decide(service, tokens, nhs, "TREAT")["rule"] == "share"


def test_data_on_the_page_is_rendered_as_text_never_run(page: Page, service: str, tokens, database: str) -> None:
    nhs = PEOPLE[2]
    engine = create_db_engine(database)
    attacker = Principal("clinician", '<img src=x onerror="window.__pwned=1">', ods_code="RH8", role="R8000")
    with transaction(sessions_for(engine)) as session:
        write_audit(session, AuditRecord("record_api", "everything", "success", attacker, nhs_number=nhs,
                                         purpose="ETREAT", entities=["Condition/<script>window.__pwned=2</script>"],
                                         break_glass_reason="<script>window.__pwned=3</script>"))
    engine.dispose()
    _signed_in(page, service, tokens.citizen(nhs))
    table = page.locator("#access-log tbody")
    expect(table).to_contain_text('<img src=x onerror="window.__pwned=1">')
    expect(table).to_contain_text("Emergency access (break-glass): <script>window.__pwned=3</script>")
    assert page.evaluate("window.__pwned") is None
    assert table.locator("img, script").count() == 0


def test_a_malformed_organisation_code_is_explained_and_nothing_is_saved(page: Page, service: str, tokens) -> None:
    nhs = PEOPLE[3]
    _signed_in(page, service, tokens.citizen(nhs))
    page.get_by_label("Organisation codes (ODS codes), separated by commas").fill("RH8, not-a-code")
    page.get_by_role("button", name="Save my choices").click()
    expect(page.get_by_role("status")).to_contain_text("Your choices were not saved")
    # The page sends codes in capitals (and shows them so), so the error quotes what the citizen sees.
    expect(page.locator("#denied-error")).to_contain_text("'NOT-A-CODE' is not an ODS organisation code")
    expect(page.locator("#denied-organisations")).to_have_attribute("aria-invalid", "true")
    assert _me(service, tokens, nhs)["denied_organisations"] == []


def test_organisation_codes_typed_in_lower_case_are_saved_in_capitals(page: Page, service: str, tokens) -> None:
    nhs = PEOPLE[8]
    _signed_in(page, service, tokens.citizen(nhs))
    page.get_by_label("Organisation codes (ODS codes), separated by commas").fill("rh8, y12345")
    page.get_by_role("button", name="Save my choices").click()
    expect(page.get_by_role("status")).to_have_text(re.compile("Your choices have been saved"))
    expect(page.locator("#denied-organisations")).to_have_value("RH8, Y12345")
    assert _me(service, tokens, nhs)["denied_organisations"] == ["RH8", "Y12345"]
    assert _decide(service, tokens, nhs)["rule"] == "denied-organisation"  # _decide asks as RH8


def test_objecting_says_what_it_risks_and_that_the_gp_practice_may_decline_it(page: Page, service: str,
                                                                              tokens) -> None:
    _signed_in(page, service, tokens.citizen(PEOPLE[0]))
    objecting = page.get_by_label("I object: only the organisation that recorded something may see it")
    described = objecting.evaluate("""el => el.getAttribute('aria-describedby').split(' ')
        .map(id => document.getElementById(id).textContent).join(' ').replace(/\\s+/g, ' ')""")
    for words in ("A&E", "would not see your medicines, allergies or conditions", "by phone, letter or email",
                  "Your GP practice may review your objection", "They can decline it",
                  "a clinician can still open your record if they give a reason"):
        assert words in described, words


def test_below_p9_the_form_is_disabled_and_says_why_before_any_save(page: Page, service: str, tokens) -> None:
    nhs = PEOPLE[9]
    _signed_in(page, service, tokens.citizen(nhs, level="P5"))
    notice = page.locator("#changes-refused")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("highest level in NHS login (P9)")
    expect(page.get_by_role("button", name="Save my choices")).to_be_disabled()
    expect(page.get_by_label("I object: only the organisation that recorded something may see it")).to_be_disabled()
    expect(page.get_by_label("Organisation codes (ODS codes), separated by commas")).to_be_disabled()
    expect(page.locator("#national-data-opt-out")).to_be_disabled()
    expect(page.locator("#statements")).to_contain_text("can see your shared care record")  # reading still works
    assert _me(service, tokens, nhs)["direct_care"] == "share"


def test_at_p9_the_form_is_enabled_with_no_notice(page: Page, service: str, tokens) -> None:
    _signed_in(page, service, tokens.citizen(PEOPLE[7]))
    expect(page.locator("#changes-refused")).to_be_hidden()
    expect(page.get_by_role("button", name="Save my choices")).to_be_enabled()
    expect(page.get_by_label("HIV/AIDS information (always kept private)")).to_be_disabled()


def test_a_change_made_on_another_device_is_never_silently_overwritten(page: Page, service: str, tokens) -> None:
    nhs = PEOPLE[4]
    _signed_in(page, service, tokens.citizen(nhs))
    other_device = {"direct_care": "share", "withheld_categories": ["SOC"], "denied_organisations": [],
                    "national_data_opt_out": False}
    created = httpx.put(f"{service}/consent/me", json=other_device,
                        headers={"Authorization": f"Bearer {tokens.citizen(nhs)}"})
    assert created.status_code == 201
    page.get_by_label("I object: only the organisation that recorded something may see it").check()
    page.get_by_role("button", name="Save my choices").click()
    expect(page.get_by_role("status")).to_contain_text("changed on another device")
    expect(page.get_by_label("Social care information")).to_be_checked()  # the latest choices were loaded
    assert _me(service, tokens, nhs) == other_device


def test_signing_in_by_pasting_a_token_and_refusing_a_bad_one(page: Page, service: str, tokens) -> None:
    page.goto(service)
    page.get_by_label("Sign-in token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("We could not sign you in")
    page.get_by_label("Sign-in token").fill(tokens.citizen(PEOPLE[5]))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Who has looked at your record")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Sign-in token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('scr.citizen.token')") is None


def test_every_control_is_labelled_and_text_meets_contrast(page: Page, service: str, tokens) -> None:
    _signed_in(page, service, tokens.citizen(PEOPLE[6]))
    unlabelled = page.evaluate("""Array.from(document.querySelectorAll('input, textarea, select'))
        .filter(el => !el.labels || el.labels.length === 0).map(el => el.id)""")
    assert unlabelled == []
    assert page.evaluate("Array.from(document.querySelectorAll('fieldset')).every(f => f.querySelector('legend'))")
    ratios = page.evaluate("""(() => {
        const rgb = s => s.match(/\\d+/g).slice(0, 3).map(Number);
        const lum = c => { const [r, g, b] = c.map(v => { v /= 255;
            return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
            return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
        const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
            return (x + 0.05) / (y + 0.05); };
        const background = el => { for (; el; el = el.parentElement) { const c = getComputedStyle(el).backgroundColor;
            if (!c.startsWith('rgba(0, 0, 0, 0)')) return rgb(c); } return [255, 255, 255]; };
        return Array.from(document.querySelectorAll('p, li, label, legend, button, th, td, h1, h2'))
            .filter(el => el.offsetParent !== null && el.textContent.trim())
            .map(el => ratio(rgb(getComputedStyle(el).color), background(el)));
    })()""")
    assert ratios and min(ratios) >= 4.5, min(ratios)


def test_the_page_and_its_assets_need_no_token_and_forbid_foreign_scripts(service: str) -> None:
    html = httpx.get(f"{service}/")
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    assert "script-src 'self'" in html.headers["content-security-policy"]
    assets = [httpx.get(f"{service}/static/{name}") for name in ("app.js", "style.css")]
    assert all(a.status_code == 200 and a.headers["x-content-type-options"] == "nosniff" for a in assets)
    assert httpx.get(f"{service}/static/index.html.bak").status_code == 404  # only the page's own files
