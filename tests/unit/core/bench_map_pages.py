"""Measure `map_pages` on generated invoices: `python tests/unit/core/bench_map_pages.py [N]`.

Not a test (no timed assertions); prints records/s for N invoices (default 10,000) x 3 lines.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[3] / "include"), str(Path(__file__).resolve().parent)]

from core_records import invoices  # noqa: E402

from erp_sync.core.batch import Page  # noqa: E402
from erp_sync.core.transform import map_pages  # noqa: E402
from erp_sync.streams.spec import StreamSpec  # noqa: E402


def main(count: int = 10_000, page_size: int = 100, repeats: int = 5) -> None:
    spec = StreamSpec(
        name="stripe_invoices",
        source_system="stripe",
        path="/v1/invoices",
        model="Invoice",
        mapping="stripe_invoices",
        target_tables=("ar_invoices", "ar_invoice_lines"),
    )
    records = invoices(count)
    pages = [
        Page(
            spec.name,
            i,
            "/v1/invoices",
            b"",
            records[s : s + page_size],
            [1] * len(records[s : s + page_size]),
        )
        for i, s in enumerate(range(0, count, page_size))
    ]
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        batch = map_pages(spec, pages)
        best = min(best, time.process_time() - started)
    lines = len(batch.tables["ar_invoice_lines"])
    print(
        f"map_pages: {count} invoices ({lines} lines) in {best:.3f}s CPU (best of {repeats})"
        f" = {count / best:,.0f} records/s"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
