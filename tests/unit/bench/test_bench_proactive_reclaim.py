"""The bench records the kernel's proactive reclaim: these VMs run a DAMON scheme that pages out
page cache left idle, which is why a stage can read from disk what an earlier stage loaded."""

from __future__ import annotations

from pathlib import Path

from bench.calibrate import paged_out_bytes, proactive_reclaim
from bench.report import _calibration_lines


def _write(root: Path, files: dict[str, str]) -> None:
    for name, value in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")


def _kdamond(root: Path, index: int, *, state: str, action: str) -> None:
    context = f"{index}/contexts/0"
    _write(
        root,
        {
            f"{index}/state": state,
            f"{context}/monitoring_attrs/intervals/aggr_us": "5000000",
            f"{context}/schemes/0/action": action,
            f"{context}/schemes/0/access_pattern/age/min": "12",
            f"{context}/schemes/0/quotas/bytes": "134217728",
            f"{context}/schemes/0/quotas/reset_interval_ms": "1000",
        },
    )


def test_a_running_pageout_scheme_is_recorded_with_its_idle_age_and_quota(tmp_path: Path) -> None:
    _kdamond(tmp_path, 0, state="on", action="pageout")
    _kdamond(tmp_path, 1, state="off", action="pageout")  # not running
    _kdamond(tmp_path, 2, state="on", action="stat")  # watches, pages nothing out
    assert proactive_reclaim(tmp_path) == [{"action": "pageout", "min_idle_s": 60.0, "quota_mb_per_s": 128.0}]


def test_no_damon_means_nothing_recorded(tmp_path: Path) -> None:
    assert proactive_reclaim(tmp_path / "absent") == []


def test_the_markdown_says_so_under_the_calibration() -> None:
    machine = {
        "calibration_at_start": {"python_loop_s": 0.05, "orjson_page_ms": 0.4},
        "proactive_reclaim": [{"action": "pageout", "min_idle_s": 60.0, "quota_mb_per_s": 128.0}],
    }
    text = "\n".join(_calibration_lines(machine))
    assert "pages out memory idle for 60 s, up to 128 MB/s" in text
    assert "Proactive reclaim" not in "\n".join(_calibration_lines({**machine, "proactive_reclaim": []}))


def test_what_a_running_pageout_scheme_paged_out_is_read_after_refreshing_its_statistics(
    tmp_path: Path,
) -> None:
    _kdamond(tmp_path, 0, state="on", action="pageout")
    _write(tmp_path, {"0/contexts/0/schemes/0/stats/sz_applied": "10149953536"})
    assert paged_out_bytes(tmp_path) == 10_149_953_536
    assert (tmp_path / "0/state").read_text() == "update_schemes_stats"  # the refresh, written


def test_no_pageout_scheme_running_means_no_count(tmp_path: Path) -> None:
    _kdamond(tmp_path, 0, state="off", action="pageout")
    _kdamond(tmp_path, 1, state="on", action="stat")
    assert paged_out_bytes(tmp_path) is None
    assert paged_out_bytes(tmp_path / "absent") is None
