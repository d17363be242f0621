"""The interleaved two-table A/B: its summary by variant and its ratios over the small table, the
flags it refuses, and the services' CPU read from /proc."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bench.ab_tables import bench_for, parse_args, summary
from bench.calibrate import service_cpu_seconds


def _delta(seconds: float, records: int, cpu: float, postgres: float, wal_mb: float = 10.0) -> dict[str, Any]:
    """A delta's result as the harness writes it: Postgres's CPU while timed, and more over the whole
    stage (its untimed count of the rows written)."""
    return {
        "seconds": seconds,
        "records": records,
        "extra": {
            "process_cpu_seconds": cpu,
            "disk_read_mb_timed": 1.0,
            "service_cpu_seconds_timed": {"postgres": postgres, "redis": 0.1},
            "wal_mb_timed": wal_mb,
        },
        "service_cpu_seconds": {"postgres": postgres + 5.0, "redis": 0.1},
        "postgres_checkpoints": {"wal_fpi": 7},
    }


def test_each_variant_gets_its_rounds_and_the_larger_ones_their_ratio_over_the_small_one() -> None:
    raw: dict[str, dict[str, Any]] = {
        "cold_sync_200": {"seconds": 10.0, "records": 200},
        "delta_small_1": _delta(1.0, 1000, 0.8, 0.4),
        "floor_delta_small_1": {"seconds": 0.5},
        "delta_large_1": _delta(3.0, 1000, 1.0, 0.8, wal_mb=40.0),
        "floor_delta_large_1": {"seconds": 0.6},
        "delta_large_2": _delta(1.5, 1000, 0.9, 0.6, wal_mb=20.0),  # its floor failed: no ratio
        "delta_small_2": _delta(2.0, 2000, 1.6, 0.8),
        "delta_largewarm_3": _delta(1.2, 1000, 0.8, 0.5),
        "delta_small_3": {"failed": True, "log_tail": "boom"},
        "prewarm_delta_largewarm_3": {"blocks": 10, "seconds": 0.1},
        "delta_small_1_mutation": {"at": 1, "counts": {}},
    }
    got = summary(raw)
    assert got["small"]["seconds"] == [1.0, 2.0]
    assert got["small"]["ms_a_record"] == [1.0, 1.0]
    assert got["large"]["ratio_to_floor"] == [5.0, None]
    assert got["large"]["postgres_cpu_seconds"] == [0.8, 0.6]  # while timed, not the whole stage's
    assert got["large"]["wal_fpi"] == [7, 7]
    assert got["large"]["median_ms_a_record"] == 2.25  # (3.0 + 1.5) / 2 s for 1,000 records
    assert got["large_over_small"] == {
        "ms_a_record": 2.25,
        "process_cpu_ms_a_record": 1.19,  # 0.95 ms / 0.8 ms
        "postgres_cpu_ms_a_record": 1.75,  # 0.7 ms / 0.4 ms
        "wal_kb_a_record": 4.0,  # 30.72 KB / 7.68 KB (10 MB for 1,000 and 2,000 records)
    }
    assert got["largewarm_over_small"]["ms_a_record"] == 1.2
    assert set(got) == {"small", "large", "largewarm", "large_over_small", "largewarm_over_small"}


def test_a_result_without_timed_service_readings_falls_back_to_the_whole_stage() -> None:
    older = _delta(1.0, 1000, 0.8, 0.4)
    del older["extra"]["service_cpu_seconds_timed"]
    assert summary({"delta_small_1": older})["small"]["postgres_cpu_seconds"] == [5.4]


def test_without_a_small_delta_there_is_no_ratio() -> None:
    got = summary({"delta_large_1": _delta(3.0, 1000, 1.0, 0.8)})
    assert set(got) == {"large"}


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--small", "5000000", "--large", "200000"], "--small"),
        (["--small", "0"], "--small"),
        (["--mutations", "0"], "--mutations"),
        (["--rounds", "0"], "--rounds"),
    ],
)
def test_a_bad_flag_stops_the_run_before_anything_runs_and_is_named(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        parse_args(argv)
    assert stopped.value.code == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "caches"),
    [
        ([], {"small": 700_000, "large": 4_000_000}),  # bench.run's default, for each table's own size
        (["--sandbox-cache", "5000"], {"small": 5_000, "large": 5_000}),
        (["--sandbox-cache=0"], {"small": 700_000, "large": 4_000_000}),  # 0 is bench.run's "default"
    ],
)
def test_each_table_s_sandbox_cache_follows_its_size_unless_the_flag_sets_it(
    argv: list[str], caches: dict[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BENCH_SANDBOX_CACHE", raising=False)
    args = parse_args(["--small", "200000", "--large", "5000000", *argv])
    found = {size: bench_for(args, size, tmp_path, tmp_path).args.sandbox_cache for size in caches}
    assert found == caches


def _process(proc: Path, pid: int, comm: str, ppid: int, ticks: tuple[int, int, int, int]) -> None:
    entry = proc / str(pid)
    entry.mkdir()
    (entry / "comm").write_text(f"{comm}\n")
    utime, stime, cutime, cstime = ticks
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime
    (entry / "stat").write_text(
        f"{pid} ({comm} x) S {ppid} 1 1 0 -1 0 0 0 0 0 {utime} {stime} {cutime} {cstime} 20 0 1 0\n"
    )


def test_service_cpu_counts_postgres_with_its_reaped_backends_redis_and_named_pids(tmp_path: Path) -> None:
    hertz = os.sysconf("SC_CLK_TCK")
    _process(tmp_path, 10, "postgres", 7, (1 * hertz, 0, 5 * hertz, 1 * hertz))  # postmaster: reaped counted
    _process(tmp_path, 11, "postgres", 10, (2 * hertz, 1 * hertz, 9 * hertz, 0))  # backend: its own only
    _process(tmp_path, 20, "redis-server", 1, (3 * hertz, 0, 0, 0))
    _process(tmp_path, 30, "python3", 1, (4 * hertz, 1 * hertz, 0, 0))
    _process(tmp_path, 40, "bash", 1, (50 * hertz, 0, 0, 0))  # not a service
    got = service_cpu_seconds({"sandbox": 30, "gone": 99, "none": None}, proc=tmp_path)
    assert got == {"postgres": 10.0, "redis": 3.0, "sandbox": 5.0}
