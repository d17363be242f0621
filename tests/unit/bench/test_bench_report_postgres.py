"""The bench report names the stages that ran beside Postgres's autovacuum or its checkpoints."""

from __future__ import annotations

from bench.report import _beside_autovacuum
from bench.run import postgres_activity


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
    work, _ = postgres_activity()
    assert work != ["(not readable)"]  # the bench's admin DSN answers here
    assert all(": " in line for line in work)


def test_pipeline_stages_during_which_postgres_checkpointed_are_listed() -> None:
    from bench.report import _during_checkpoints

    stages = [
        {"stage": "delta", "postgres_checkpoints": {"checkpoints": 1, "buffers_checkpoint": 20_000}},
        {"stage": "delta_settled", "postgres_checkpoints": {"checkpoints": 0, "buffers_checkpoint": 0}},
        {"stage": "peer_dlt_cold", "postgres_checkpoints": {"checkpoints": 3, "buffers_checkpoint": 9}},
    ]
    assert _during_checkpoints(stages) == ["- delta: 1 checkpoint(s), 20,000 buffers written by them"]
    _, counters = postgres_activity()
    assert set(counters) == {"checkpoints", "buffers_checkpoint", "buffers_backend"}
    assert all(value >= 0 for value in counters.values())
