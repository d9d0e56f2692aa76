"""Test fixtures shared by every suite: a real PostgreSQL cluster and a real Kafka broker (started here, on
free loopback ports, and stopped at the end even when tests fail), migrated databases, and signed tokens."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from shared.db import migrate
from shared.events import ALL_TOPICS
from tests.support.tokens import TokenFactory

# Shared machines are noisy: hypothesis must judge correctness, not speed.
settings.register_profile("scr", deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("scr")

@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    from tools.peers.postgres import PostgresServer

    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def kafka() -> Iterator[Any]:
    from tools.peers.kafka import KafkaBroker

    broker = KafkaBroker().start()
    try:
        broker.create_topics(list(ALL_TOPICS), partitions=3)
        yield broker
    finally:
        broker.destroy()


@pytest.fixture
def pg_url(postgres: Any) -> str:
    """A fresh, migrated PostgreSQL database for one test."""
    url = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    migrate(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite database for one test (the embedded default's store)."""
    url = f"sqlite:///{tmp_path / 'scr.db'}"
    migrate(url)
    return url


@pytest.fixture(scope="session")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> TokenFactory:
    return TokenFactory(tmp_path_factory.mktemp("keys"))
