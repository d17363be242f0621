"""Operator extra link from the reconciliation task instance to its drift report in the UI plugin.

The reconciliation task pushes the stored report's id to XCom under `drift_report_id`; at task end
the worker calls `get_link` and stores the URL, and the grid view shows a "Drift report" button on
the task instance. Attach with `operator_extra_links = (DriftReportLink(),)` on the operator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

XCOM_REPORT_ID_KEY = "drift_report_id"
UI_URL_PREFIX = "/drift-reports"  # plugins/drift_reports/app.py URL_PREFIX


def report_url(report_id: Any, base_url: str = "") -> str:
    """The report page's URL under the api-server's base URL; "" when there is no usable id.

    `base_url` is `[api] base_url` (it may carry a sub-path such as `https://host/airflow`); without
    it the link is root-relative, which the UI opens against its own host.
    """
    if isinstance(report_id, bool) or report_id is None:
        return ""
    try:
        number = int(str(report_id))
    except ValueError:
        return ""
    if number <= 0:
        return ""
    return f"{base_url.rstrip('/')}{UI_URL_PREFIX}/reports/{number}"


class DriftReportLink(BaseOperatorLink):
    """ "Drift report" button on the reconciliation task instance, pointing at its report page."""

    name = "Drift report"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        report_id = XCom.get_value(ti_key=ti_key, key=XCOM_REPORT_ID_KEY)
        return report_url(report_id, _api_base_url())


def _api_base_url() -> str:
    from airflow.providers.common.compat.sdk import conf  # the SDK's config on workers, core's elsewhere

    return conf.get("api", "base_url", fallback="") or ""
