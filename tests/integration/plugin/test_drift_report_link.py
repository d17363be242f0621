"""DriftReportLink end to end: a real task run pushes `drift_report_id`, Airflow stores the link, and
the api-server's extra-links endpoint (what the grid view calls) returns the report page's URL."""

from __future__ import annotations

import subprocess
import textwrap

import httpx
import pytest

from tests.browser.airflow_server import AIRFLOW_BIN, AirflowServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_ID = "erp_ui_link_check"

DAG_SOURCE = textwrap.dedent(
    """
    from datetime import datetime, timezone

    from airflow.sdk import DAG, BaseOperator

    from erp_sync.operators.links import XCOM_REPORT_ID_KEY, DriftReportLink


    class PushReportId(BaseOperator):
        # Stands in for the reconciliation operator: it stores a report and pushes its id.
        operator_extra_links = (DriftReportLink(),)

        def __init__(self, report_id, **kwargs):
            super().__init__(**kwargs)
            self.report_id = report_id

        def execute(self, context):
            context["ti"].xcom_push(key=XCOM_REPORT_ID_KEY, value=self.report_id)


    with DAG("{dag_id}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False):
        PushReportId(task_id="reconcile", report_id={report_id}, retries=0)
    """
)


def test_reconcile_task_instance_links_to_its_report(airflow_server: AirflowServer) -> None:
    report_id = airflow_server.seeded.by_status("DRIFT")[0].report_id
    dag_file = airflow_server.home / "dags" / f"{DAG_ID}.py"
    dag_file.write_text(DAG_SOURCE.format(dag_id=DAG_ID, report_id=report_id))
    result = subprocess.run(
        [str(AIRFLOW_BIN), "dags", "test", DAG_ID],
        env=airflow_server.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    token = airflow_server.token("auditor")
    with httpx.Client(
        base_url=f"{airflow_server.base_url}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as api:
        runs = api.get(f"/dags/{DAG_ID}/dagRuns").json()["dag_runs"]
        assert [r["state"] for r in runs] == ["success"]
        links = api.get(f"/dags/{DAG_ID}/dagRuns/{runs[0]['dag_run_id']}/taskInstances/reconcile/links")
        assert links.status_code == 200, links.text
        expected = f"{airflow_server.base_url}/drift-reports/reports/{report_id}"
        assert links.json()["extra_links"] == {"Drift report": expected}

        # and the link leads to the report for the same user
        page = httpx.get(expected, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert page.status_code == 200 and f"Drift report #{report_id}" in page.text
