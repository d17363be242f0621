"""Human-readable run summaries (task log, demo)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

COLUMNS = ("stream", "mode", "extracted", "new", "changed", "unchanged", "rejected", "batches", "seconds")


def sync_summary_table(summaries: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table, one line per stream plus a total line, conservation checked per line."""
    rows = [[str(s.get(c, "")) for c in COLUMNS] for s in summaries]
    totals = {c: sum(int(s.get(c) or 0) for s in summaries) for c in COLUMNS[2:8]}
    rows.append(["TOTAL", ""] + [str(totals[c]) for c in COLUMNS[2:8]] + [""])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    balanced = totals["extracted"] == (
        totals["new"] + totals["changed"] + totals["unchanged"] + totals["rejected"]
    )
    lines.append(
        "conservation (extracted = new + changed + unchanged + rejected): "
        + ("holds" if balanced else "VIOLATED")
    )
    return "\n".join(lines)
