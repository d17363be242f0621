"""How fast this machine's CPU is right now, and how much of it other tenants took during a stage.

The machines the benchmark runs on are shared virtual machines: the same code measured 2.5x slower
on one afternoon than on the night before, with nothing else running on the guest (host
contention shows as `steal` in /proc/stat). Seconds from two runs are comparable only when the CPU
was equally fast, so every run records a calibration at its start and end (a fixed pure-Python
loop and an orjson decode of a fixed, generated Stripe-shaped page, best of several tries), and
every stage records the share of CPU time the hypervisor stole and how busy both cores were.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

LOOP_ITERATIONS = 2_000_000
TRIES = 7


def _python_loop_seconds() -> float:
    started = time.perf_counter()
    total = 0
    for i in range(LOOP_ITERATIONS):
        total += i & 7
    return time.perf_counter() - started


def _page() -> bytes:
    """~0.4 MB: 100 invoice-like objects of 70 fields with 3 lines each (deterministic)."""
    invoices = [
        {
            **{f"field_{k}": (k * n if k % 3 else f"value {k} of {n}") for k in range(60)},
            "id": f"in_{n:08d}",
            "metadata": {"order": str(n), "region": "eu"},
            "lines": {
                "data": [{"id": f"il_{n}_{j}", "amount": 100 * j, "period": {"start": n}} for j in range(3)]
            },
        }
        for n in range(100)
    ]
    return orjson.dumps({"object": "list", "data": invoices, "has_more": True})


def _decode_ms(page: bytes) -> float:
    started = time.perf_counter()
    for _ in range(10):
        orjson.loads(page)
    return (time.perf_counter() - started) / 10 * 1000


def calibrate() -> dict[str, float]:
    """Best and median of `TRIES`: the best is the CPU undisturbed, the median nearer what a long
    stage gets. Neither is the whole story: on 2026-11-27 the best loop was 26-35% slower than the day's
    quickest while the peers (dlt, datacompy) took 2.1-2.2x their time of the night before, so
    compare runs by their ratios to the peers measured with them."""
    page = _page()
    loops = sorted(_python_loop_seconds() for _ in range(TRIES))
    decodes = sorted(_decode_ms(page) for _ in range(TRIES))
    return {
        "python_loop_s": round(loops[0], 4),
        "python_loop_s_median": round(loops[TRIES // 2], 4),
        "orjson_page_ms": round(decodes[0], 3),
        "orjson_page_ms_median": round(decodes[TRIES // 2], 3),
    }


@dataclass(frozen=True)
class CpuTimes:
    """The machine-wide counters of /proc/stat's `cpu` line, in clock ticks."""

    busy: int
    idle: int
    steal: int

    @classmethod
    def now(cls) -> CpuTimes | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        except OSError:
            return None
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
        return cls(busy=user + nice + system + irq + softirq, idle=idle + iowait, steal=steal)


def cpu_shares(before: CpuTimes | None, after: CpuTimes | None) -> dict[str, Any] | None:
    """Of the CPU time that passed between `before` and `after` (all cores): % busy here, % stolen."""
    if before is None or after is None:
        return None
    busy, idle, steal = after.busy - before.busy, after.idle - before.idle, after.steal - before.steal
    total = busy + idle + steal
    if total <= 0:
        return None
    return {"busy_pct": round(100 * busy / total, 1), "steal_pct": round(100 * steal / total, 1)}


def disk_read_kb() -> int | None:
    """KB the kernel has read from block devices since boot (/proc/vmstat `pgpgin`): what a stage
    read from disk rather than from the page cache, machine-wide."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "pgpgin":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


DAMON_KDAMONDS = Path("/sys/kernel/mm/damon/admin/kdamonds")


def _pageout_schemes(root: Path) -> Iterator[tuple[Path, Path, Path]]:
    """(kdamond, context, scheme) of every running DAMON scheme whose action is `pageout`."""
    for kdamond in sorted(root.glob("[0-9]*")):
        if _sysfs(kdamond / "state") != "on":
            continue
        for scheme in sorted(kdamond.glob("contexts/[0-9]*/schemes/[0-9]*")):
            if _sysfs(scheme / "action") == "pageout":
                yield kdamond, scheme.parent.parent, scheme


def proactive_reclaim(root: Path = DAMON_KDAMONDS) -> list[dict[str, Any]]:
    """The kernel's DAMON schemes that page memory out once it has sat idle, running on this
    machine (these VMs run one): Postgres's pages a stage loaded may be read from disk again by a
    later stage, with gigabytes free. Empty where none runs."""
    found = []
    for _, context, scheme in _pageout_schemes(root):
        aggr_us = int(_sysfs(context / "monitoring_attrs/intervals/aggr_us") or 0)
        quota_bytes = int(_sysfs(scheme / "quotas/bytes") or 0)
        reset_ms = int(_sysfs(scheme / "quotas/reset_interval_ms") or 0)
        found.append(
            {
                "action": "pageout",
                "min_idle_s": int(_sysfs(scheme / "access_pattern/age/min") or 0) * aggr_us / 1e6,
                "quota_mb_per_s": round(quota_bytes / 2**20 * 1000 / reset_ms, 1)
                if quota_bytes and reset_ms
                else None,
            }
        )
    return found


def paged_out_bytes(root: Path = DAMON_KDAMONDS) -> int | None:
    """Bytes the kernel's running DAMON `pageout` schemes have paged out (proactive reclaim: memory
    left idle, page cache included), machine-wide; None where none runs or its statistics cannot be
    refreshed (root only: each read first writes `update_schemes_stats` to the kdamond)."""
    schemes = list(_pageout_schemes(root))
    try:
        for kdamond in {kdamond for kdamond, _, _ in schemes}:
            (kdamond / "state").write_text("update_schemes_stats")
        total = sum(int((scheme / "stats/sz_applied").read_text()) for _, _, scheme in schemes)
    except (OSError, ValueError):
        return None
    return total if schemes else None


def _sysfs(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def drop_page_cache() -> str:
    """Write dirty pages out and drop the kernel's page cache (root only): what a stage reads after it
    comes from disk, as after a reboot or after other work pushed it out. Returns what was done."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        return f"not dropped: {exc}"
    return "dropped"


def _stat_fields(stat_line: str) -> list[str]:
    """The fields of one `/proc/<pid>/stat` line after the command name, which may hold spaces:
    state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)."""
    return stat_line.rsplit(")", 1)[1].split()


def _stat_ticks(stat_line: str, *, reaped: bool = False) -> int:
    """User and system clock ticks from one `/proc/<pid>/stat` line (with `reaped`, those of the
    children it has waited for too)."""
    fields = _stat_fields(stat_line)
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def service_cpu_seconds(
    pids: dict[str, int | None] | None = None, proc: Path = Path("/proc")
) -> dict[str, float]:
    """CPU seconds used so far by the services a stage talks to: every `postgres` process (the
    postmaster's reaped children included, so a backend that exits between two readings still
    counts), every `redis-server`, and each pid in `pids` by name (the bench's sandbox). Two
    readings' difference is what they spent while a stage ran, beside the stage's own process CPU."""
    hertz = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[str, str]] = {}
    for entry in proc.glob("[0-9]*"):
        try:
            comm = (entry / "comm").read_text().strip()
            if comm in ("postgres", "redis-server"):
                name = "redis" if comm == "redis-server" else "postgres"
                stats[int(entry.name)] = (name, (entry / "stat").read_text())
        except OSError:
            continue  # exited while read
    postgres_pids = {pid for pid, (name, _) in stats.items() if name == "postgres"}
    ticks: dict[str, int] = {}
    for name, stat in stats.values():
        # The postmaster is the postgres process whose parent is not one.
        postmaster = name == "postgres" and int(_stat_fields(stat)[1]) not in postgres_pids
        ticks[name] = ticks.get(name, 0) + _stat_ticks(stat, reaped=postmaster)
    for name, pid in (pids or {}).items():
        if pid is None:
            continue
        try:
            ticks[name] = _stat_ticks((proc / str(pid) / "stat").read_text())
        except OSError:
            continue
    return {name: round(count / hertz, 2) for name, count in ticks.items()}


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each service used between two `service_cpu_seconds` readings (one missing from
    either is left out)."""
    return {name: round(after[name] - before[name], 2) for name in after if name in before}


if __name__ == "__main__":
    print(calibrate())
