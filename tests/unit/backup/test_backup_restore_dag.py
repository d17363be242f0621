"""The restore DAG parses, is wired check_params -> apply_migrations -> restore_from_sftp, and takes only
safe params."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[3] / "dags"


@pytest.fixture(scope="module")
def dag():  # type: ignore[no-untyped-def]
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / "erp_restore_from_backup.py"))
    assert bag.import_errors == {}
    return bag.dags["erp_restore_from_backup"]


def test_restore_dag_validates_params_before_restoring(dag) -> None:  # type: ignore[no-untyped-def]
    assert type(dag.timetable).__name__ == "NullTimetable"  # manual only
    assert dag.max_active_runs == 1  # two restores never interleave
    check, restore = dag.get_task("check_params"), dag.get_task("restore_from_sftp")
    migrate = dag.get_task("apply_migrations")  # a disaster recovery restores into a new, empty database
    assert migrate.upstream_task_ids == {check.task_id}
    assert restore.upstream_task_ids == {check.task_id, migrate.task_id}
    assert set(dag.params.keys()) == {"run_id", "date_from", "date_to", "restore_reports"}
    assert all(dag.params[name] is None for name in ("run_id", "date_from", "date_to"))
    assert dag.params["restore_reports"] is True  # the reports come back with the pages unless asked not to
    assert dag.doc_md and "before writing anything" in dag.doc_md


def test_check_params_refuses_a_restore_reports_that_is_not_a_boolean(dag) -> None:  # type: ignore[no-untyped-def]
    check = dag.get_task("check_params").python_callable
    given = {"date_from": "2026-11-01", "date_to": "2026-11-02"}
    assert check(params={**given})["restore_reports"] is True
    assert check(params={**given, "restore_reports": False})["restore_reports"] is False
    with pytest.raises(ValueError, match="restore_reports must be true or false, got 'no'"):
        check(params={**given, "restore_reports": "no"})
