"""Assets shared by the DAGs: a finished sync updates the staging tables, which schedules reconciliation.

The URI names the staging tables as a whole (a `postgres://` URI must name one table, and one sync
updates several), so it uses the project's own scheme.
"""

from __future__ import annotations

from airflow.sdk import Asset

STAGING_ASSET = Asset(name="erp_staging", uri="erp-sync://erp_staging/staging_tables")
