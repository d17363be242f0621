"""DagBag integrity: every DAG imports, has the conventions we promise, and does no I/O at parse time."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {"saas_to_erp_sync", "erp_drift_reconciliation"}


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory):
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_home")))
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


def test_expected_dags_present(dagbag) -> None:
    assert set(dagbag.dag_ids) >= EXPECTED


def test_conventions(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md, f"{dag_id} has no doc_md"
        assert dag.start_date is not None and dag.start_date.tzinfo is not None, dag_id
        assert not dag.catchup, f"{dag_id} catches up by default"
        for t in dag.tasks:
            if t.task_id.startswith(("check_params", "validate_params")):
                continue  # a bad parameter is not transient: those fail fast, once
            assert t.retries is not None and t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"


def test_nightly_schedule_has_a_real_data_interval(dagbag) -> None:
    from airflow.timetables.interval import CronDataIntervalTimetable

    timetable = dagbag.dags["saas_to_erp_sync"].timetable
    assert isinstance(timetable, CronDataIntervalTimetable)
    assert timetable.summary == "0 2 * * *"


def test_parsing_does_no_network_io(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Re-parse the DAG folder with sockets forbidden: a DAG file that connects anywhere fails here."""
    from airflow.dag_processing.dagbag import DagBag

    def refuse(*args, **kwargs):
        raise AssertionError("a DAG file opened a network connection at parse time")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) >= EXPECTED


def test_the_reconciliation_dag_offers_every_parameter_the_run_accepts(dagbag) -> None:
    """A Param the run refused would fail every run; one the run accepts but the DAG lacks could not be set
    from the trigger form. Their defaults are the run's own (an untouched form changes nothing)."""
    from datetime import UTC, datetime

    from erp_sync.reconcile_run import PARAM_NAMES, conf_from_params, parse_request

    params = dagbag.dags["erp_drift_reconciliation"].params
    assert set(params.keys()) | {"erp_sql"} == PARAM_NAMES  # erp_sql comes from a Variable
    now = datetime(2026, 11, 27, tzinfo=UTC)
    form_defaults = conf_from_params({name: params[name] for name in params})
    assert parse_request(form_defaults, now=now) == parse_request({}, now=now)
