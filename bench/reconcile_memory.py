"""Peak memory and time of reconcile's record comparison for N synthetic invoices per side.

    python -m bench.reconcile_memory --records 1000000                   # spills past SPILL_ROWS
    python -m bench.reconcile_memory --records 1000000 --spill-rows 2000000  # the in-memory path

Both sides go through `SideBuilder` in chunks of 5,000 rows, as `reconcile_run` reads them: the SaaS
side newest first in a background thread, the ERP side oldest first in this thread (ADR 0006). Then
`reconcile_stream` compares them (one bucket range at a time when a side spilled). 1% of the records
are planted differences (0.25% each: missing in the ERP, missing in the SaaS, amount, status); the
run fails unless exactly those are found. No HTTP, no SQL: this measures the core only.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from erp_sync.core.reconcile import (
    SPILL_ROWS,
    Side,
    SideBuilder,
    StreamResult,
    ToleranceConfig,
    reconcile_stream,
)

CHUNK = 5_000
METRICS = ("total_amount",)
CURRENCIES = np.array(["USD", "JPY", "KWD"], dtype=object)
STATUSES = np.array(["paid", "open", "void"], dtype=object)
PLANT_EVERY = 400  # record i with i % 400 in 0..3 is planted: 4 of every 400 records = 1%
MISSING_IN_ERP, AMOUNT, STATUS, MISSING_IN_SAAS = 0, 1, 2, 3


def _source_ids(numbers: np.ndarray) -> np.ndarray:
    return np.array([f"in_{n:010d}" for n in numbers.tolist()], dtype=object)


def _chunk(numbers: np.ndarray, *, erp: bool) -> pd.DataFrame:
    planted = numbers % PLANT_EVERY
    keep = planted != (MISSING_IN_ERP if erp else MISSING_IN_SAAS)
    numbers, planted = numbers[keep], planted[keep]
    amount = (numbers * 7919) % 10**9
    status = STATUSES[(numbers // 3) % 3]
    if erp:
        amount = amount + (planted == AMOUNT)
        status = np.where(planted == STATUS, "disputed", status)
    frame = pd.DataFrame(
        {
            "source_id": _source_ids(numbers),
            "currency_code": CURRENCIES[numbers % 3],
            "status": status,
            "total_amount": amount,
        }
    )
    if erp:
        frame["sync_batch_id"] = 7
    return frame


def build_side(records: int, *, erp: bool, spill_rows: int) -> Side:
    """The SaaS side newest first (API order), the ERP side oldest first (any SQL order)."""
    builder = SideBuilder("invoices", METRICS, with_batch_id=erp, spill_rows=spill_rows)
    starts = range(0, records, CHUNK) if erp else reversed(range(0, records, CHUNK))
    for start in starts:
        numbers = np.arange(start, min(start + CHUNK, records), dtype=np.int64)
        builder.add_scaled(_chunk(numbers if erp else numbers[::-1], erp=erp))
    return builder.finish()


def planted(records: int) -> set[tuple[str, str]]:
    kinds = {
        MISSING_IN_ERP: "missing_in_erp",
        MISSING_IN_SAAS: "missing_in_saas",
        AMOUNT: "amount_mismatch",
        STATUS: "status_mismatch",
    }
    expected: set[tuple[str, str]] = set()
    for offset, kind in kinds.items():
        numbers = np.arange(offset, records, PLANT_EVERY, dtype=np.int64)
        expected |= {(kind, source_id) for source_id in _source_ids(numbers)}
    return expected


def run(records: int, spill_rows: int) -> tuple[StreamResult, bool, float, float]:
    """Build both sides (the SaaS one in a thread) and compare them: (result, spilled, build s, compare s)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as pool:
        saas_future = pool.submit(build_side, records, erp=False, spill_rows=spill_rows)
        erp = build_side(records, erp=True, spill_rows=spill_rows)
        saas = saas_future.result()
    built = time.perf_counter()
    spilled = saas.spilled or erp.spilled
    result = reconcile_stream("invoices", saas, erp, METRICS, ToleranceConfig())
    return result, spilled, built - started, time.perf_counter() - built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, required=True, help="records per side")
    parser.add_argument("--spill-rows", type=int, default=SPILL_ROWS, help=f"default {SPILL_ROWS:,}")
    args = parser.parse_args(argv)
    result, spilled, build_s, compare_s = run(args.records, args.spill_rows)
    found = set(zip(result.items["kind"], result.items["source_id"], strict=True))
    exact = found == planted(args.records) and len(found) == len(result.items)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        f"records {args.records:,}  spill_rows {args.spill_rows:,}  spilled {spilled}  "
        f"items {len(result.items):,} ({'exactly the planted ones' if exact else 'NOT the planted ones'})  "
        f"peak RSS {peak_mb:,.0f} MB  seconds {build_s + compare_s:.1f} "
        f"(build {build_s:.1f}, compare {compare_s:.1f})"
    )
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
