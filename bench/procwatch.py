"""Run one benchmark stage as a child process and measure its peak memory.

Peak RSS is measured two ways and the larger is reported: the child's own `ru_maxrss` (exact for a
single process, reported back by the child) and a sampler that sums the RSS of the child and all its
descendants every 20 ms from /proc (catches worker processes a stage may start).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SAMPLE_INTERVAL_S = 0.02
TIMELINE_EVERY_S = 15.0
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class ChildRun:
    returncode: int
    wall_seconds: float
    tree_peak_rss_mb: float
    log_tail: str
    rss_timeline: list[tuple[float, float]]  # (seconds since start, tree RSS MB), every TIMELINE_EVERY_S


def _children_of(pid: int) -> list[int]:
    kids: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        for task in task_dir.iterdir():
            text = (task / "children").read_text()
            kids.extend(int(k) for k in text.split())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return kids


def _rss_kb(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(fields[1]) * PAGE_KB


def tree_rss_kb(root: int) -> int:
    """Sum of the resident set sizes of `root` and every descendant, right now."""
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _rss_kb(pid)
        stack.extend(_children_of(pid))
    return total


class _Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kb = 0
        self.timeline: list[tuple[float, float]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        next_mark = 0.0
        while not self._halt.is_set():
            rss = tree_rss_kb(self.pid)
            self.peak_kb = max(self.peak_kb, rss)
            elapsed = time.monotonic() - started
            if elapsed >= next_mark:  # a coarse timeline: is memory flat over a long stage?
                self.timeline.append((round(elapsed, 1), round(rss / 1024, 1)))
                next_mark += TIMELINE_EVERY_S
            self._halt.wait(SAMPLE_INTERVAL_S)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _log_shows(log_path: Path, marker: str) -> bool:
    with log_path.open("rb") as fh:
        fh.seek(max(0, log_path.stat().st_size - 65536))
        return marker.encode() in fh.read()


def run_child(
    argv: list[str],
    *,
    env: dict[str, str],
    log_path: Path,
    timeout_s: float,
    cwd: Path | None = None,
    abort_on: str | None = None,
) -> ChildRun:
    """Run `argv` to completion (killed after `timeout_s`, or as soon as its log shows `abort_on`),
    sampling its process tree's RSS."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_path.open("ab") as log:
        log.write(f"\n$ {' '.join(argv)}\n".encode())
        log.flush()
        # Its own process group, so a kill reaches the workers it started too.
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )
        sampler = _Sampler(proc.pid)
        sampler.start()
        try:
            returncode = _wait(proc, timeout_s, log_path, abort_on)
        except subprocess.TimeoutExpired as exc:
            os.killpg(proc.pid, signal.SIGKILL)
            returncode = proc.wait()
            log.write(f"\nKILLED: {exc}\n".encode())
        finally:
            sampler.stop()
    wall = time.monotonic() - started
    tail = log_path.read_bytes()[-3000:].decode("utf-8", "replace")
    return ChildRun(returncode, wall, sampler.peak_kb / 1024, tail, sampler.timeline)


def _wait(proc: subprocess.Popen[bytes], timeout_s: float, log_path: Path, abort_on: str | None) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(proc.args, timeout_s) from None
            if abort_on and _log_shows(log_path, abort_on):
                raise subprocess.TimeoutExpired(
                    proc.args, 0, output=f"log showed {abort_on!r}".encode()
                ) from None
