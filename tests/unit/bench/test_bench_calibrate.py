"""The benchmark's machine-speed record: CPU shares of a stage from two /proc/stat readings."""

from __future__ import annotations

from bench.calibrate import CpuTimes, calibrate, cpu_shares


def test_cpu_shares_split_the_elapsed_ticks_into_busy_and_stolen() -> None:
    before = CpuTimes(busy=1_000, idle=5_000, steal=10)
    after = CpuTimes(busy=1_600, idle=5_300, steal=110)
    assert cpu_shares(before, after) == {"busy_pct": 60.0, "steal_pct": 10.0}


def test_no_reading_or_no_time_passed_gives_no_shares() -> None:
    reading = CpuTimes(busy=1, idle=1, steal=0)
    assert cpu_shares(None, reading) is None
    assert cpu_shares(reading, reading) is None


def test_this_machine_can_be_read_and_calibrated() -> None:
    assert CpuTimes.now() is not None  # Linux: the runner has /proc/stat
    measured = calibrate()
    assert 0 < measured["python_loop_s"] <= measured["python_loop_s_median"]
    assert 0 < measured["orjson_page_ms"] <= measured["orjson_page_ms_median"]


def test_disk_reads_are_counted_from_the_kernel() -> None:
    from bench.calibrate import disk_read_kb

    first = disk_read_kb()
    assert first is not None and first >= 0  # /proc/vmstat's pgpgin, KB since boot
    second = disk_read_kb()
    assert second is not None and second >= first
