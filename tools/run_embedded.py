"""`make run`: the whole platform on one machine in its embedded default (SQLite store, the database event
log instead of Kafka, a dev signing key), loaded with demo data, until Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
import time

from services.ingest.settings import IngestSettings
from shared.db import migrate
from shared.settings import DEV_DIR, ServiceSettings
from tools.devkeys import ensure_export_key, ensure_signing_key
from tools.devtokens import DEV_MAX_TOKEN_LIFETIME_SECONDS, write_service_token
from tools.processes import ServiceProcess, start_all, stop_all

PORTS = {"record_api": 8001, "ingest": 8002, "consent": 8003}


def _ports() -> dict[str, int]:
    """PORTS, or the ports in SCR_RUN_PORTS ("8101,8102,8103": record API, ingest, consent) when those are taken."""
    chosen = os.environ.get("SCR_RUN_PORTS")
    if not chosen:
        return PORTS
    return dict(zip(PORTS, (int(port) for port in chosen.split(",")), strict=True))


def service_links(ports: dict[str, int]) -> dict[str, str]:
    """How the services reach each other on the chosen ports: the record API asks consent for every decision. A
    variable already set wins (a consent service run elsewhere)."""
    links = {"SCR_CONSENT_URL": f"http://127.0.0.1:{ports['consent']}"}
    return {name: url for name, url in links.items() if name not in os.environ}


def _dev_environment() -> dict[str, str]:
    """The dev signing key's JWKS, the export key and the dev tokens' lifetime, unless already set."""
    env: dict[str, str] = {}
    if "SCR_JWKS" not in os.environ:
        _, jwks = ensure_signing_key(DEV_DIR)
        env["SCR_JWKS"] = str(jwks)
    if "SCR_EXPORT_PSEUDONYM_KEY_FILE" not in os.environ and "SCR_EXPORT_PSEUDONYM_KEY" not in os.environ:
        env["SCR_EXPORT_PSEUDONYM_KEY_FILE"] = str(ensure_export_key(DEV_DIR))
    if "SCR_MAX_TOKEN_LIFETIME_SECONDS" not in os.environ:  # the dev tokens live up to a day (tools/devtokens.py)
        env["SCR_MAX_TOKEN_LIFETIME_SECONDS"] = str(DEV_MAX_TOKEN_LIFETIME_SECONDS)
    return env


def main() -> None:
    settings = ServiceSettings()  # SCR_ variables already in the environment win over these defaults
    DEV_DIR.mkdir(parents=True, exist_ok=True)
    ports = _ports()
    env = _dev_environment() | service_links(ports)
    write_service_token()
    print(f"store: {settings.database_url}", flush=True)
    migrate(settings.database_url)
    services = start_all(ports, env, DEV_DIR)
    try:
        _load_demo_data(services)
        _print_banner(services)
        _wait_until_interrupted(services)
    finally:
        print("\nstopping...", flush=True)
        stop_all(services)
        print("stopped.")


def _load_demo_data(services: dict[str, ServiceProcess]) -> None:
    from tools import demo

    summary = demo.load(services["ingest"].url, services["consent"].url)
    print(f"demo data loaded: {summary}", flush=True)


def _print_banner(services: dict[str, ServiceProcess]) -> None:
    record, ingest, consent = services["record_api"].url, services["ingest"].url, services["consent"].url
    print(f"""
Shared care record is running (embedded default; logs in {DEV_DIR}/*.log)

  Record API (FHIR R4)   {record}/fhir/metadata      e.g. {record}/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000018
  Ingest                 {ingest}/docs              MLLP on 127.0.0.1:{IngestSettings().mllp_port}
  Consent + citizen page {consent}/
  Population health      {record}/population/aggregates.html   bulk export at {record}/fhir/$export (planner token)
  Health and metrics     /healthz  /readyz  /metrics on each

Dev tokens (clinician, citizen, feed, privacy officer, planner):   make tokens
  curl -H "Authorization: Bearer $(.venv/bin/python -m tools.devtokens clinician)" {record}/fhir/Patient?family=demo

Ctrl-C stops everything.
""", flush=True)


def _wait_until_interrupted(services: dict[str, ServiceProcess]) -> None:
    def stop(*_: object) -> None:
        # Once: a second TERM (or Ctrl-C) while the services stop must not break off the shutdown.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while True:
            for service in services.values():
                if service.proc and service.proc.poll() is not None:
                    print(f"{service.name} exited unexpectedly (code {service.proc.returncode}); "
                          f"see {service.log_path}", file=sys.stderr)
                    return
            time.sleep(1)
    except KeyboardInterrupt:
        return


if __name__ == "__main__":
    main()
