"""Every Drift reports route is behind Airflow's own authentication and authorisation.

The routes are enumerated from the plugin's FastAPI app itself, so a route added later is covered
without touching this file. Requests go to a real `airflow api-server` with SimpleAuthManager.
"""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.routing import APIRoute

from tests.browser.airflow_server import AirflowServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _plugin_paths(report_id: int) -> list[str]:
    """Every GET route of the plugin app, path parameters filled with a real report id."""
    from drift_reports.app import URL_PREFIX, create_app

    app = create_app(connect=lambda: pytest.fail("enumerating routes must not touch the database"))
    paths = []
    for route in app.routes:
        assert isinstance(route, APIRoute), f"unexpected non-API route {route!r}: protect or remove it"
        assert route.methods == {"GET"}, f"{route.path} serves {route.methods}: this UI is read-only"
        params = set(re.findall(r"{(\w+)}", route.path))
        assert params <= {"report_id"}, f"{route.path}: teach this test a value for {params}"
        paths.append(URL_PREFIX + route.path.replace("{report_id}", str(report_id)))
    return paths


@pytest.fixture(scope="module")
def paths(airflow_server: AirflowServer) -> list[str]:
    found = _plugin_paths(airflow_server.seeded.by_status("DRIFT")[0].report_id)
    assert len(found) >= 4  # index, report page, CSV, JSON at least
    return found


def test_routes_enumerated_cover_the_known_pages(paths: list[str]) -> None:
    suffixes = {re.sub(r"/\d+", "/N", p.removeprefix("/drift-reports")) for p in paths}
    assert {"/", "/reports/N", "/reports/N/items.csv", "/reports/N/report.json"} <= suffixes


def test_anonymous_request_to_every_route_is_refused(airflow_server: AirflowServer, paths: list[str]) -> None:
    for path in paths:
        resp = httpx.get(airflow_server.base_url + path, timeout=30)
        assert resp.status_code == 401, f"{path} answered {resp.status_code} without credentials"
        assert resp.json() == {"detail": "Not authenticated"}  # and no report data


def test_forged_token_is_refused_on_every_route(airflow_server: AirflowServer, paths: list[str]) -> None:
    forged = "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl"
    for path in paths:
        bearer = httpx.get(
            airflow_server.base_url + path, headers={"Authorization": f"Bearer {forged}"}, timeout=30
        )
        cookie = httpx.get(airflow_server.base_url + path, cookies={"_token": forged}, timeout=30)
        assert bearer.status_code in (401, 403), f"{path}: forged Bearer got {bearer.status_code}"
        assert cookie.status_code in (401, 403), f"{path}: forged cookie got {cookie.status_code}"


def test_user_without_dag_run_read_permission_is_forbidden(
    airflow_server: AirflowServer, paths: list[str]
) -> None:
    token = airflow_server.token("outsider")  # authenticated, but has no role
    for path in paths:
        resp = httpx.get(
            airflow_server.base_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert resp.status_code == 403, f"{path} answered {resp.status_code} to a user without access"


def test_viewer_bearer_token_reads_every_route(airflow_server: AirflowServer, paths: list[str]) -> None:
    token = airflow_server.token("auditor")  # SimpleAuthManager role "viewer": may read DAG runs
    for path in paths:
        resp = httpx.get(
            airflow_server.base_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        assert resp.status_code == 200, f"{path}: {resp.status_code} {resp.text[:200]}"


def _status_codes(server: AirflowServer, user: str, paths: list[str]) -> dict[str, int]:
    token = server.token(user)
    return {
        path: httpx.get(
            server.base_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ).status_code
        for path in paths
    }


def test_access_is_decided_for_the_reconciliation_dag_itself(
    airflow_server: AirflowServer, paths: list[str]
) -> None:
    """With an auth manager that grants DAGs one by one (tests/browser/scoped_auth_manager.py), a user
    who may read the reconciliation DAG's runs, and no other DAG, reads every route; a user who may
    read another DAG only reads none."""
    assert set(_status_codes(airflow_server, "recon_auditor", paths).values()) == {200}
    assert set(_status_codes(airflow_server, "sync_operator", paths).values()) == {403}
    # The scoping is the auth manager's, as Airflow's own API shows: each reads its own DAG's runs only.
    token = airflow_server.token("sync_operator")
    own, other = (
        httpx.get(
            f"{airflow_server.base_url}/api/v2/dags/{dag_id}/dagRuns",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ).status_code
        for dag_id in ("saas_to_erp_sync", "erp_drift_reconciliation")
    )
    assert own != 403 and other == 403


def test_session_cookie_reads_every_route(airflow_server: AirflowServer, paths: list[str]) -> None:
    token = airflow_server.token("auditor")
    for path in paths:
        resp = httpx.get(airflow_server.base_url + path, cookies={"_token": token}, timeout=60)
        assert resp.status_code == 200, f"{path}: {resp.status_code} {resp.text[:200]}"


def test_docs_and_openapi_of_the_plugin_are_not_served(airflow_server: AirflowServer) -> None:
    for path in ("/drift-reports/docs", "/drift-reports/openapi.json", "/drift-reports/redoc"):
        resp = httpx.get(airflow_server.base_url + path, timeout=30)
        assert resp.status_code in (401, 404), f"{path} answered {resp.status_code}"
