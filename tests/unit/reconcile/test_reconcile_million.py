"""A million-record comparison finds exactly the planted differences, held in memory or spilled to
disk, and spilling keeps the traced peak well under the in-memory path's."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from erp_sync.core.reconcile import (
    ReconcileResult,
    Side,
    SideBuilder,
    StreamResult,
    ToleranceConfig,
    reconcile_stream,
)

pytestmark = pytest.mark.slow

N = 1_000_000
CHUNK = 50_000
PEAK_LIMIT_BYTES = 512 * 1024 * 1024  # building both sides and comparing them in memory stays under this
SPILL_ROWS = 200_000


def _side(ids, currency, status, amount, *, with_batch: bool, spill_rows: int, extra=None) -> Side:
    builder = SideBuilder("invoices", ("total_amount",), with_batch_id=with_batch, spill_rows=spill_rows)
    for start in range(0, len(ids), CHUNK):
        part = slice(start, start + CHUNK)
        frame = pd.DataFrame(
            {"source_id": ids[part], "currency_code": currency[part], "status": status[part],
             "total_amount": amount[part]}
        )  # fmt: skip
        if with_batch:
            frame["sync_batch_id"] = 7
        builder.add_scaled(frame)
    if extra is not None:
        builder.add_scaled(extra)
    return builder.finish()


def _reconcile(data: dict[str, Any], spill_rows: int) -> tuple[StreamResult, bool]:
    ids, keep = data["ids"], data["keep"]
    saas = _side(
        ids, data["currency"], data["status"], data["amount"], with_batch=False, spill_rows=spill_rows
    )
    erp = _side(
        ids[keep], data["currency"][keep], data["erp_status"][keep], data["erp_amount"][keep],
        with_batch=True, spill_rows=spill_rows, extra=data["extra"],
    )  # fmt: skip
    spilled = saas.spilled and erp.spilled
    return reconcile_stream("invoices", saas, erp, ("total_amount",), ToleranceConfig()), spilled


def _traced(run: Callable[[], tuple[StreamResult, bool]]) -> tuple[StreamResult, bool, int]:
    tracemalloc.start()
    try:
        result, spilled = run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, spilled, peak


def test_million_record_diff_is_exact_spilled_or_not_and_spilling_bounds_memory():
    rng = np.random.default_rng(3)
    ids = np.array([f"in_{i:010d}" for i in range(N)], dtype=object)
    status = rng.choice(np.array(["paid", "open", "void"], dtype=object), N)
    data: dict[str, Any] = {
        "ids": ids,
        "currency": rng.choice(np.array(["USD", "JPY", "KWD"], dtype=object), N),
        "status": status,
        "amount": rng.integers(0, 10**9, N),
        "keep": np.ones(N, dtype=bool),
        "extra": pd.DataFrame(
            {
                "source_id": ["in_extra"],
                "currency_code": ["USD"],
                "status": ["open"],
                "total_amount": [5],
                "sync_batch_id": [9],
            }
        ),
    }
    data["erp_amount"] = data["amount"].copy()
    data["erp_amount"][[10, 20]] += 1  # two amounts one thousandth off
    data["erp_status"] = status.copy()
    data["erp_status"][30] = "paid" if status[30] != "paid" else "open"
    data["keep"][[1, 2, 3]] = False  # three records missing in the ERP

    in_memory, spilled_any, peak_in_memory = _traced(lambda: _reconcile(data, spill_rows=2 * N))
    assert not spilled_any
    spilled, spilled_both, peak_spilled = _traced(lambda: _reconcile(data, spill_rows=SPILL_ROWS))
    assert spilled_both

    expected = sorted(
        [("missing_in_erp", ids[i]) for i in (1, 2, 3)]
        + [("amount_mismatch", ids[10]), ("amount_mismatch", ids[20])]
        + [("status_mismatch", ids[30]), ("missing_in_saas", "in_extra")]
    )
    for result in (in_memory, spilled):
        assert sorted(zip(result.items["kind"], result.items["source_id"], strict=True)) == expected
        assert sum(t.saas_count for t in result.totals if t.metric == "count") == N
    pd.testing.assert_frame_equal(ReconcileResult([spilled]).items, ReconcileResult([in_memory]).items)
    assert spilled.totals == in_memory.totals
    assert peak_in_memory < PEAK_LIMIT_BYTES, f"in memory: peaked at {peak_in_memory / 2**20:.0f} MiB"
    assert peak_spilled < peak_in_memory / 2, (
        f"spilled at {SPILL_ROWS:,} rows: {peak_spilled / 2**20:.0f} MiB, "
        f"in memory: {peak_in_memory / 2**20:.0f} MiB"
    )
