"""Registers the Drift reports UI with Airflow 3: a FastAPI app and a navigation entry.

The app is mounted on the api-server at `/drift-reports`; the external view puts "Drift reports" in
the UI's navigation and shows the app inside the Airflow UI at `/plugin/drift-reports`.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from drift_reports.app import URL_PREFIX, create_app


class DriftReportsPlugin(AirflowPlugin):
    name = "drift_reports"
    fastapi_apps = [
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "Drift reports"},
    ]
    external_views = [
        {
            "name": "Drift reports",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "drift-reports",
            "category": "Browse",
        },
    ]
