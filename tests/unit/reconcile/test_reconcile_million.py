"""A million-record diff finds exactly the planted differences within a bounded amount of memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest

from erp_sync.core.reconcile import SideBuilder, ToleranceConfig, reconcile_stream

pytestmark = pytest.mark.slow

N = 1_000_000
CHUNK = 50_000
PEAK_LIMIT_BYTES = 512 * 1024 * 1024  # the diff of 1M records must stay well under this


def _side(ids, currency, status, amount, *, with_batch: bool) -> pd.DataFrame:
    builder = SideBuilder("invoices", ("total_amount",), with_batch_id=with_batch)
    for start in range(0, len(ids), CHUNK):
        part = slice(start, start + CHUNK)
        frame = pd.DataFrame(
            {"source_id": ids[part], "currency_code": currency[part], "status": status[part],
             "total_amount": amount[part]}
        )  # fmt: skip
        if with_batch:
            frame["sync_batch_id"] = 7
        builder.add_scaled(frame)
    return builder.frame()


def test_million_record_diff_is_exact_and_memory_bounded():
    rng = np.random.default_rng(3)
    ids = np.array([f"in_{i:010d}" for i in range(N)], dtype=object)
    currency = rng.choice(np.array(["USD", "JPY", "KWD"], dtype=object), N)
    status = rng.choice(np.array(["paid", "open", "void"], dtype=object), N)
    amount = rng.integers(0, 10**9, N)
    saas = _side(ids, currency, status, amount, with_batch=False)
    erp_amount = amount.copy()
    erp_amount[[10, 20]] += 1  # two amounts one thousandth off
    erp_status = status.copy()
    erp_status[30] = "paid" if status[30] != "paid" else "open"
    keep = np.ones(N, dtype=bool)
    keep[[1, 2, 3]] = False  # three records missing in the ERP
    erp = _side(ids[keep], currency[keep], erp_status[keep], erp_amount[keep], with_batch=True)
    extra = pd.DataFrame(
        {"source_id": ["in_extra"], "currency_code": ["USD"], "status": ["open"], "total_amount": [5],
         "sync_batch_id": [9]}
    )  # fmt: skip
    erp = pd.concat([erp, extra], ignore_index=True)

    tracemalloc.start()
    try:
        result = reconcile_stream("invoices", saas, erp, ("total_amount",), ToleranceConfig())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    found = sorted(zip(result.items["kind"], result.items["source_id"], strict=True))
    assert found == sorted(
        [("missing_in_erp", ids[i]) for i in (1, 2, 3)]
        + [("amount_mismatch", ids[10]), ("amount_mismatch", ids[20])]
        + [("status_mismatch", ids[30]), ("missing_in_saas", "in_extra")]
    )
    assert peak < PEAK_LIMIT_BYTES, f"reconcile peaked at {peak / 2**20:.0f} MiB"
    assert sum(t.saas_count for t in result.totals if t.metric == "count") == N
