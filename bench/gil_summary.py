"""Summarise a `--gil-profile` file (py-spy collapsed stacks, GIL holder only): `python -m
bench.gil_summary FILE [--top N]`. Prints each thread's share of the samples, then functions by
inclusive and by self share: the process's CPU by function, whichever thread ran it."""

from __future__ import annotations

import argparse
import collections
from pathlib import Path


def _function(frame: str) -> str:
    """`name (path/to/file.py:123)` -> `name file.py` (lines merged)."""
    name, _, where = frame.partition(" (")
    return f"{name} {where.split(':')[0].rsplit('/', 1)[-1]}" if where else name


def summarise(path: Path, top: int) -> str:
    total = 0
    threads: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        threads[_function(frames[0])] += count
        functions = [_function(frame) for frame in frames[1:]]
        for function in set(functions):
            inclusive[function] += count
        if functions:
            own[functions[-1]] += count
    lines = [f"{total} samples"]
    lines += [f"thread from {name}: {count / total:.1%}" for name, count in threads.most_common()]
    for title, counter in (("inclusive", inclusive), ("self", own)):
        lines.append(f"-- {title}")
        lines += [f"{count / total:6.1%}  {name}" for name, count in counter.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    print(summarise(args.file, args.top))


if __name__ == "__main__":
    main()
