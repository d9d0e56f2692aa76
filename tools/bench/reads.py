"""Read latency under concurrency: `$everything` and Patient search by NHS number through the record API
(consent enforced, every read audited), against the bare SQL that fetches the same rows, at 1, 8 and 32
concurrent clients. The clients run on the same two cores as the services and PostgreSQL."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg

from shared.fhir import NHS_NUMBER_SYSTEM
from tools.bench.environment import Environment

CONCURRENCY = (1, 8, 32)
EVERYTHING_SQL = ("SELECT body::text FROM resource WHERE person_id = %s AND NOT deleted "
                  "AND resource_type NOT IN ('Provenance', 'Consent') ORDER BY last_updated DESC")
PATIENT_SQL = ("SELECT r.body::text FROM search_param s JOIN resource r ON r.resource_type = s.resource_type "
               "AND r.id = s.resource_id WHERE s.resource_type = 'Patient' AND s.param = 'identifier' "
               "AND s.system = %s AND s.code = %s AND NOT r.deleted")


@dataclass
class Latency:
    """Latencies of one load level, in milliseconds."""

    what: str
    clients: int
    samples: list[float]
    seconds: float
    errors: int = 0

    def pct(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    @property
    def p50(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def rps(self) -> float:
        return len(self.samples) / self.seconds if self.seconds else 0.0


def run_load(what: str, clients: int, seconds: float, make: Callable[[], Any],
             call: Callable[[Any, int], bool]) -> Latency:
    """`clients` threads, each with its own connection from `make()`, calling `call(conn, n)` back to back for
    `seconds`; a call returns False for an unexpected answer (counted, not timed)."""
    samples: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline: list[float] = []  # set when every client is connected and ready
    barrier = threading.Barrier(clients, action=lambda: deadline.append(time.monotonic() + seconds))

    def worker(offset: int) -> None:
        conn = make()
        mine: list[float] = []
        bad = 0
        n = offset
        barrier.wait()
        try:
            while n == offset or time.monotonic() < deadline[0]:  # every client makes at least one call
                started = time.perf_counter()
                ok = call(conn, n)
                elapsed = (time.perf_counter() - started) * 1000
                if ok:
                    mine.append(elapsed)
                else:
                    bad += 1
                n += clients
        finally:
            conn.close()
        with lock:
            samples.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Latency(what, clients, samples, max(seconds, time.monotonic() - (deadline[0] - seconds)), errors[0])


def _api(env: Environment) -> Callable[[], httpx.Client]:
    headers = {"Authorization": f"Bearer {env.tokens.clinician()}", "Accept": "application/fhir+json"}
    return lambda: httpx.Client(base_url=env.url("record_api"), headers=headers, timeout=60)


def _sql(env: Environment) -> Callable[[], psycopg.Connection[Any]]:
    return lambda: psycopg.connect(env.dsn, autocommit=True)


def everything(env: Environment, person_ids: list[str], clients: int, seconds: float) -> tuple[Latency, Latency]:
    """$everything (one page holding the whole record) and its bare SQL, for the same persons."""
    def api(client: httpx.Client, n: int) -> bool:
        response = client.get(f"/fhir/Patient/{person_ids[n % len(person_ids)]}/$everything",
                              params={"_count": "1000"})
        return response.status_code == 200 and b'"entry"' in response.content

    def sql(conn: psycopg.Connection[Any], n: int) -> bool:
        return bool(conn.execute(EVERYTHING_SQL, (person_ids[n % len(person_ids)],)).fetchall())

    return (run_load("$everything", clients, seconds, _api(env), api),
            run_load("$everything bare SQL", clients, seconds, _sql(env), sql))


def nhs_search(env: Environment, numbers: list[str], clients: int, seconds: float) -> tuple[Latency, Latency]:
    """Patient?identifier=<NHS number system>|<number> and its bare SQL, for the same numbers."""
    def api(client: httpx.Client, n: int) -> bool:
        response = client.get("/fhir/Patient", params={
            "identifier": f"{NHS_NUMBER_SYSTEM}|{numbers[n % len(numbers)]}"})
        return response.status_code == 200 and b'"Patient"' in response.content

    def sql(conn: psycopg.Connection[Any], n: int) -> bool:
        return bool(conn.execute(PATIENT_SQL, (NHS_NUMBER_SYSTEM, numbers[n % len(numbers)])).fetchall())

    return (run_load("Patient search by NHS number", clients, seconds, _api(env), api),
            run_load("Patient search bare SQL", clients, seconds, _sql(env), sql))


def everything_size(env: Environment, person_id: str) -> int:
    """How many resources one `$everything` answer holds."""
    client = _api(env)()
    try:
        bundle = client.get(f"/fhir/Patient/{person_id}/$everything", params={"_count": "1000"}).json()
    finally:
        client.close()
    return len(bundle.get("entry", []))
