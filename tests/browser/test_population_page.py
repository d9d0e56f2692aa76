"""The population aggregates page in a real headless Chromium (Debian's), served by the record API running as its
own process beside the consent service: the charts and their tables render, suppressed small numbers are shown
as such, people who opted out are not counted, there is no script and no console error, and it needs a token."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from shared.db import migrate
from tests.support import data
from tests.support.record_store import RecordStore, encounter, episode_of_care
from tests.support.services import service_env
from tests.support.tokens import TokenFactory
from tools.peers.ports import free_port
from tools.processes import ServiceProcess

pytestmark = pytest.mark.browser
PEOPLE = data.synthetic_nhs_numbers(16, start=999_400_000)
PAGE = "/population/aggregates.html?date=2026-06-01"


def _seed(url: str) -> None:
    """Twelve women in their seventies, one child, and an opted-out man (he must not be counted)."""
    store = RecordStore(url)
    try:
        for index, nhs in enumerate(PEOPLE[:14]):
            person = store.person(nhs)
            child, opted_out = index == 12, index == 13
            store.source_patient(person, org=data.GP_ODS, system="EMIS", nhs_number=nhs,
                                 birth_date="2020-07-01" if child else "1951-02-01",
                                 gender="male" if opted_out else "female",
                                 postcode="LS6 3CD" if index % 2 else "LS1 2AB", gp_ods=data.GP_ODS,
                                 local_id=("https://emis.example/Id/patient", f"E-{nhs}"))
            store.clinical(person, encounter("2025-05-01T10:00:00Z"), org=data.ACUTE_ODS, system="PAS")
            if index < 6:
                store.clinical(person, episode_of_care(), labels=("SOC",), org=data.SOCIAL_CARE_ODS,
                               system="Mosaic")
    finally:
        store.close()


@pytest.fixture(scope="module")
def services(tokens: TokenFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("population-page")
    database = f"sqlite:///{base / 'scr.db'}"
    migrate(database)
    _seed(database)
    (base / "record-api.token").write_text(tokens.system())
    (base / "pseudonym.key").write_text(base64.b64encode(os.urandom(48)).decode())
    consent = ServiceProcess("consent", free_port(), service_env(tokens, database), base / "consent.log").start()
    record = None
    try:
        consent.wait_ready()
        opted_out = PEOPLE[13]
        saved = httpx.put(f"{consent.url}/consent/me", headers={"Authorization": f"Bearer {tokens.citizen(opted_out)}"},
                          json={"direct_care": "share", "withheld_categories": [], "denied_organisations": [],
                                "national_data_opt_out": True})
        assert saved.status_code == 201, saved.text
        env = service_env(tokens, database, SCR_CONSENT_URL=consent.url,
                          SCR_CONSENT_TOKEN_FILE=str(base / "record-api.token"),
                          SCR_EXPORT_PSEUDONYM_KEY_FILE=str(base / "pseudonym.key"),
                          SCR_POPULATION_SUPPRESSION_THRESHOLD="3")
        record = ServiceProcess("record_api", free_port(), env, base / "record_api.log").start()
        record.wait_ready()
        yield record.url
    finally:
        if record:
            record.stop()
        consent.stop()


@pytest.fixture
def planner(browser: Browser, tokens: TokenFactory) -> Iterator[Page]:
    """A planner's browser: every request carries the planning system's token (as an authenticating gateway
    in front of the page would add it)."""
    token = tokens.token({"sub": "ics-planning", "scope": "system/*.read", "ods_code": "QWO"})
    context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {token}"})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda message: _console(message, problems))
    yield page
    context.close()
    assert problems == [], problems


def _console(message: ConsoleMessage, problems: list[str]) -> None:
    if message.type in ("error", "warning"):
        problems.append(f"{message.type}: {message.text}")


def test_the_page_shows_a_chart_and_a_table_for_each_group(planner: Page, services: str) -> None:
    response = planner.goto(f"{services}{PAGE}")
    assert response is not None and response.status == 200
    assert "default-src 'none'" in response.headers["content-security-policy"]
    expect(planner.get_by_role("heading", level=1)).to_have_text("Population health: who uses services")
    charts = planner.get_by_role("img")
    expect(charts).to_have_count(5)
    for name in ("People by age band", "People by sex", "People by ethnic category",
                 "People by deprivation decile", "People by postcode district"):
        expect(planner.get_by_role("heading", name=name)).to_be_visible()
        expect(planner.get_by_role("table", name=name)).to_be_visible()
    assert planner.locator("script").count() == 0
    assert planner.locator("rect.bar").count() >= 5
    box = planner.locator("#by-age_band svg").bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 100  # really drawn, not collapsed


def test_small_numbers_are_shown_as_suppressed_and_opted_out_people_are_not_counted(planner: Page,
                                                                                     services: str) -> None:
    planner.goto(f"{services}{PAGE}")
    totals = planner.locator("#totals")
    expect(totals.get_by_role("row", name="People 13", exact=True)).to_be_visible()  # 14 seeded, one opted out
    ages = planner.locator("#table-age_band")
    expect(ages.get_by_role("row", name="75-84 suppressed", exact=True)).to_be_visible()  # 12: hidden with the 1
    expect(ages.get_by_role("row", name="5-17 suppressed", exact=True)).to_be_visible()
    expect(ages.get_by_role("row", name="35-44 0", exact=True)).to_be_visible()
    chart = planner.locator("#by-age_band svg")
    expect(chart.get_by_text("suppressed (small number)").first).to_be_visible()
    sex = planner.locator("#table-sex")
    expect(sex.get_by_role("row", name="Female 13", exact=True)).to_be_visible()
    expect(sex.get_by_role("row", name="Male 0", exact=True)).to_be_visible()  # the opted-out man is not there


def test_the_measure_can_be_changed_with_the_keyboard(planner: Page, services: str) -> None:
    planner.goto(f"{services}{PAGE}")
    link = planner.get_by_role("link", name="Open social-care episodes")
    link.focus()
    planner.keyboard.press("Enter")
    expect(planner).to_have_url(re.compile(r"measure=open_social_care_episodes"))
    expect(planner.get_by_role("heading", name="Open social-care episodes by age band")).to_be_visible()
    expect(planner.get_by_role("link", name="Open social-care episodes")).to_have_attribute("aria-current", "page")
    # 75-84's twelve people are hidden (the partner of the one child), so their six episodes are hidden too.
    expect(planner.locator("#table-age_band").get_by_role("row", name="75-84 suppressed", exact=True)).to_be_visible()


def test_the_page_needs_a_system_token(browser: Browser, services: str, tokens: TokenFactory) -> None:
    anonymous = browser.new_context()
    try:
        response = anonymous.new_page().goto(f"{services}{PAGE}")
        assert response is not None and response.status == 401
    finally:
        anonymous.close()
    clinician = browser.new_context(extra_http_headers={"Authorization": f"Bearer {tokens.clinician()}"})
    try:
        response = clinician.new_page().goto(f"{services}{PAGE}")
        assert response is not None and response.status == 403
    finally:
        clinician.close()


def test_the_page_is_self_contained_and_never_shows_the_token(planner: Page, services: str) -> None:
    requested: list[str] = []
    planner.on("request", lambda request: requested.append(request.url))
    planner.goto(f"{services}{PAGE}")
    planner.wait_for_load_state("networkidle")
    assert requested == [f"{services}{PAGE}"]  # no scripts, styles, fonts or images to fetch
    assert "Bearer" not in planner.content() and "eyJ" not in planner.content()
