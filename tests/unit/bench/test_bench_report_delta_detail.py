"""The bench report's delta targets say, beside the seconds, the delta's CPU and its disk reads: what
tells a delta bound by the GIL from one waiting on Postgres's pages."""

from __future__ import annotations

from typing import Any

from bench.report import _rows, targets


def _delta(seconds: float, **extra: Any) -> dict[str, Any]:
    return {"seconds": seconds, "records": 13_619, "extra": extra}


def test_each_delta_target_carries_its_cpu_and_disk_reads() -> None:
    raw = {
        "delta": _delta(2.209, process_cpu_seconds=1.329, disk_read_mb_timed=190.8),
        "delta_settled": _delta(1.756, process_cpu_seconds=1.413, disk_read_mb_timed=46.0),
    }
    by_target = {t["target"]: t for t in targets(_rows(raw), 1_000_000)}
    first = by_target["1% delta, right after the bulk loads"]
    settled = by_target["1% delta, tables vacuumed"]
    assert (first["measured"], first["met"], first["detail"]) == (
        2.209,
        False,
        "CPU 1.33 s, 191 MB read from disk",
    )
    assert (settled["met"], settled["detail"]) == (True, "CPU 1.41 s, 46 MB read from disk")


def test_a_delta_without_those_figures_has_no_detail() -> None:
    by_target = {t["target"]: t for t in targets(_rows({"delta": _delta(1.5)}), 1_000_000)}
    assert by_target["1% delta, right after the bulk loads"].get("detail") is None


def test_what_the_kernel_paged_out_between_the_cold_sync_and_the_first_delta_is_said_beside_its_reads() -> (
    None
):
    def stage(seconds: float, during: float, before: float) -> dict[str, Any]:
        return {**_delta(seconds), "paged_out_mb": during, "paged_out_mb_before": before}

    raw = {
        "cold_sync": stage(120.0, 500.0, 1.0),  # during the cold sync: not counted
        "replay": stage(35.0, 300.0, 20.0),
        "peer_dlt_replay": stage(330.0, 1_900.0, 0.5),
        "delta": {
            **stage(3.64, 7.0, 1.2),
            "extra": {"process_cpu_seconds": 2.03, "disk_read_mb_timed": 109.5},
        },
        "delta_settled": {**stage(2.43, 0.0, 30.0), "extra": {"process_cpu_seconds": 2.04}},
    }
    by_target = {t["target"]: t for t in targets(_rows(raw), 1_000_000)}
    assert by_target["1% delta, right after the bulk loads"]["detail"] == (
        "CPU 2.03 s, 110 MB read from disk, 2,222 MB paged out by the kernel since the cold sync"
    )  # 20 + 300 + 0.5 + 1,900 + 1.2
    assert by_target["1% delta, tables vacuumed"]["detail"] == "CPU 2.04 s"
    del raw["replay"]["paged_out_mb_before"]  # a stage between that could not read the counter
    by_target = {t["target"]: t for t in targets(_rows(raw), 1_000_000)}
    assert by_target["1% delta, right after the bulk loads"]["detail"] == "CPU 2.03 s, 110 MB read from disk"
