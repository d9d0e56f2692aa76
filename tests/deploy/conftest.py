"""Deploy tests render the real chart with the real helm CLI, installed into .peers/helm on first use."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.chart import PRODUCTION_VALUES, Manifest, ensure_helm, render


@pytest.fixture(scope="session", autouse=True)
def helm() -> Path:
    return ensure_helm()


@pytest.fixture
def default() -> list[Manifest]:
    """The chart with its default values."""
    return render()


@pytest.fixture
def production() -> list[Manifest]:
    """The chart with the production-like example values."""
    return render(None, PRODUCTION_VALUES)
