"""Fixtures for the Drift reports plugin tests: one real Airflow api-server per pytest process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.browser.airflow_server import AirflowServer, shared_server

PLUGINS = Path(__file__).resolve().parents[3] / "plugins"
if str(PLUGINS) not in sys.path:  # the api-server puts plugins/ on sys.path; do the same here
    sys.path.insert(0, str(PLUGINS))


@pytest.fixture(scope="session")
def airflow_server(request: pytest.FixtureRequest) -> AirflowServer:
    return shared_server(request)
