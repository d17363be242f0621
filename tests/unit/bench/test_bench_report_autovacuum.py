"""The bench report names the stages that ran beside Postgres's autovacuum."""

from __future__ import annotations

from bench.report import _beside_autovacuum
from bench.run import autovacuum_work


def test_only_stages_that_met_an_autovacuum_worker_are_listed() -> None:
    stages = [
        {"stage": "cold_sync", "autovacuum": {"before": [], "after": []}},
        {
            "stage": "delta",
            "autovacuum": {
                "before": ["erp_bench_x: autovacuum: VACUUM erp_staging.ar_invoices"],
                "after": [],
            },
        },
        {"stage": "floor_copy"},  # a run from before the field existed
    ]
    assert _beside_autovacuum(stages) == [
        "- delta: at start erp_bench_x: autovacuum: VACUUM erp_staging.ar_invoices, at end none"
    ]


def test_the_workers_are_read_from_this_machines_postgres() -> None:
    work = autovacuum_work()
    assert work != ["(not readable)"]  # the bench's admin DSN answers here
    assert all(": " in line for line in work)
