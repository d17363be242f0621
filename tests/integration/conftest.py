"""Fixtures shared by the integration tests of several folders."""

from __future__ import annotations

from tests.integration.dag_runs import airflow_home, dag_sftp  # noqa: F401  (fixtures)
