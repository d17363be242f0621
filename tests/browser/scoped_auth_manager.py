"""SimpleAuthManager with two users whose DAG access is per DAG, as an ERP's Airflow would grant it
with FAB or Keycloak: `recon_auditor` may read the reconciliation DAG only, `sync_operator` the
nightly sync only. Neither may read "every DAG" (the check made without a dag id). Every other user
is SimpleAuthManager's. The test api-server runs with it (tests/browser/airflow_server.py)."""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

DAG_SCOPES = {"recon_auditor": {"erp_drift_reconciliation"}, "sync_operator": {"saas_to_erp_sync"}}


class PerDagSimpleAuthManager(SimpleAuthManager):
    def is_authorized_dag(
        self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
    ) -> bool:
        scope = DAG_SCOPES.get(user.get_name())
        if scope is None:
            return super().is_authorized_dag(
                method=method, user=user, access_entity=access_entity, details=details
            )
        return method == "GET" and details is not None and details.id in scope
