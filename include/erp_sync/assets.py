"""Assets shared by the DAGs: a finished sync updates the staging tables, which schedules reconciliation."""

from __future__ import annotations

from airflow.sdk import Asset

STAGING_ASSET = Asset(name="erp_staging", uri="postgres://erp_staging/erp_staging")
