"""A side that spills to hash-bucketed files compares exactly like the same side held in memory,
and its temporary directory is removed afterwards, also when the comparison raises."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from erp_sync.core import reconcile as core
from erp_sync.core.reconcile import (
    ReconcileResult,
    Side,
    SideBuilder,
    StreamResult,
    ToleranceConfig,
    bucket_ranges,
    reconcile_stream,
    side_totals,
)

METRICS = ("amount", "amount_refunded")
TOLERANCES = ToleranceConfig.from_mapping({"charges": {"abs_minor": 1}, "charges:JPY": {"rel": "0.01"}})
CURRENCIES = np.array(["USD", "jpy", "KWD", "EUR"], dtype=object)
STATUSES = np.array(["paid", "open", "void", "uncollectible"], dtype=object)


def _random_sides(seed: int, n: int = 1_500) -> tuple[pd.DataFrame, pd.DataFrame]:
    """SaaS and ERP rows with copies of some ids (the later copy differs), records missing on each
    side, and status, amount and currency mismatches, in several currencies."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"ch_{i:06d}" for i in range(n)] + ["ch_é", "ch_日本"], dtype=object)
    total = len(ids)
    base = pd.DataFrame(
        {
            "source_id": ids,
            "currency_code": rng.choice(CURRENCIES, total),
            "status": rng.choice(STATUSES, total),
            "amount": rng.integers(-(10**6), 10**9, total),
            "amount_refunded": rng.integers(0, 10**4, total),
        }
    )
    saas = base[rng.random(total) > 0.05]
    erp = base[rng.random(total) > 0.05].copy()
    erp.loc[rng.random(len(erp)) < 0.03, "status"] = "paid"
    erp.loc[rng.random(len(erp)) < 0.03, "amount"] += rng.integers(-3, 4)
    erp.loc[rng.random(len(erp)) < 0.02, "currency_code"] = "GBP"
    erp["sync_batch_id"] = pd.array(rng.integers(1, 50, len(erp)), dtype="Int64")
    erp.loc[rng.random(len(erp)) < 0.1, "sync_batch_id"] = pd.NA
    saas = pd.concat([saas, _later_copies(saas, rng)], ignore_index=True)
    erp = pd.concat([erp, _later_copies(erp, rng)], ignore_index=True)
    return saas, erp


def _later_copies(rows: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Copies of ~5% of the rows with other amounts and statuses: these must win."""
    copies = rows[rng.random(len(rows)) < 0.05].copy()
    copies["amount"] += 1
    copies["status"] = rng.choice(STATUSES, len(copies))
    return copies


def _build(rows: pd.DataFrame, *, erp: bool, spill_rows: int, chunk: int = 97) -> Side:
    builder = SideBuilder("charges", METRICS, with_batch_id=erp, spill_rows=spill_rows)
    for start in range(0, len(rows), chunk):
        builder.add_scaled(rows.iloc[start : start + chunk])
    return builder.finish()


def _compare(saas: Side, erp: Side, erp_totals: pd.DataFrame | None = None) -> StreamResult:
    return reconcile_stream("charges", saas, erp, METRICS, TOLERANCES, erp_totals=erp_totals)


def _sorted_items(result: StreamResult) -> pd.DataFrame:
    items = result.items.assign(_m=result.items["metric"].fillna(""))
    return items.sort_values(["kind", "source_id", "_m"]).drop(columns="_m").reset_index(drop=True)


def _assert_same(spilled: StreamResult, in_memory: StreamResult) -> None:
    assert len(in_memory.items) > 20, "the data must have differences to prove anything"
    assert set(in_memory.items["kind"]) == {
        "missing_in_erp",
        "missing_in_saas",
        "amount_mismatch",
        "status_mismatch",
    }
    pd.testing.assert_frame_equal(_sorted_items(spilled), _sorted_items(in_memory))
    # the report's order (ReconcileResult.items) is the same row for row
    pd.testing.assert_frame_equal(
        ReconcileResult([spilled]).items, ReconcileResult([in_memory]).items, check_exact=True
    )
    assert spilled.totals == in_memory.totals
    assert (spilled.saas_records, spilled.erp_records) == (in_memory.saas_records, in_memory.erp_records)


@pytest.mark.parametrize(
    ("saas_spill", "erp_spill", "n"),
    [(60, 60, 1_500), (60, 10**9, 1_500), (10**9, 45, 1_500), (1, 1, 300)],
    ids=["both", "saas", "erp", "every-row"],
)
def test_spilled_sides_give_the_in_memory_result(saas_spill: int, erp_spill: int, n: int) -> None:
    saas_rows, erp_rows = _random_sides(seed=saas_spill + erp_spill, n=n)
    in_memory = _compare(
        _build(saas_rows, erp=False, spill_rows=10**9), _build(erp_rows, erp=True, spill_rows=10**9)
    )
    saas, erp = (
        _build(saas_rows, erp=False, spill_rows=saas_spill),
        _build(erp_rows, erp=True, spill_rows=erp_spill),
    )
    assert (saas.spilled, erp.spilled) == (saas_spill < 10**9, erp_spill < 10**9)
    _assert_same(_compare(saas, erp), in_memory)


def test_erp_totals_from_sql_are_used_as_given() -> None:
    saas_rows, erp_rows = _random_sides(seed=5)
    sql_totals = side_totals(_build(erp_rows, erp=True, spill_rows=10**9).frame, METRICS)
    sql_totals["count"] += 1  # not what the records say: the given totals must win
    in_memory = _compare(
        _build(saas_rows, erp=False, spill_rows=10**9),
        _build(erp_rows, erp=True, spill_rows=10**9),
        sql_totals,
    )
    spilled = _compare(
        _build(saas_rows, erp=False, spill_rows=50), _build(erp_rows, erp=True, spill_rows=50), sql_totals
    )
    _assert_same(spilled, in_memory)
    given = {(t.currency_code, t.status): t.erp_count for t in spilled.totals if t.metric == "count"}
    assert given == {key: int(count) for key, count in sql_totals["count"].items()}


def test_few_buckets_bigger_than_the_limit_still_give_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    saas_rows, erp_rows = _random_sides(seed=11)
    in_memory = _compare(
        _build(saas_rows, erp=False, spill_rows=10**9), _build(erp_rows, erp=True, spill_rows=10**9)
    )
    monkeypatch.setattr(core, "SPILL_BUCKETS", 3)
    spilled = _compare(_build(saas_rows, erp=False, spill_rows=40), _build(erp_rows, erp=True, spill_rows=40))
    _assert_same(spilled, in_memory)


def test_a_frame_compares_with_a_spilled_side() -> None:
    saas_rows, erp_rows = _random_sides(seed=2)
    saas_frame = _build(saas_rows, erp=False, spill_rows=10**9).frame
    erp_frame = _build(erp_rows, erp=True, spill_rows=10**9).frame
    in_memory = _compare(saas_frame, erp_frame)
    _assert_same(_compare(saas_frame, _build(erp_rows, erp=True, spill_rows=30)), in_memory)


def test_the_last_copy_wins_across_runs() -> None:
    builder = SideBuilder("charges", METRICS, with_batch_id=True, spill_rows=2)
    rows = [
        ("a", "USD", "open", 1, None),
        ("b", "USD", "open", 2, 1),
        ("c", "EUR", "paid", 3, 1),
        ("a", "usd", "paid", 9, 4),
    ]
    for source_id, currency, status, amount, batch in rows:
        frame = pd.DataFrame(
            {"source_id": [source_id], "currency_code": [currency], "status": [status], "amount": [amount],
             "amount_refunded": [0], "sync_batch_id": pd.array([batch], dtype="Int64")}
        )  # fmt: skip
        builder.add_scaled(frame)
    with builder.finish() as side:
        assert side.spilled and len(side.bucketed().runs) == 2 and len(side) == 4
        (first, stop), *rest = bucket_ranges(side.bucketed().counts(), limit=10)
        assert rest == []
        frame = side.bucketed().frame(first, stop).set_index("source_id")
    assert len(frame) == 3
    assert (frame.loc["a", "amount"], frame.loc["a", "status"], frame.loc["a", "currency_code"]) == (
        9,
        "paid",
        "USD",
    )
    assert frame.loc["a", "sync_batch_id"] == 4 and frame["amount"].dtype == np.int64


def test_runs_are_plain_npy_files_removed_with_the_side() -> None:
    saas_rows, erp_rows = _random_sides(seed=3, n=300)
    saas, erp = _build(saas_rows, erp=False, spill_rows=100), _build(erp_rows, erp=True, spill_rows=100)
    directories = [Path(side.directory.name) for side in (saas, erp) if side.directory is not None]
    assert len(directories) == 2 and directories[0] != directories[1]
    files = sorted(directories[1].iterdir())
    assert files and all(f.suffix == ".npy" for f in files)
    run = np.load(files[0], allow_pickle=False)  # no pickled objects in a run
    assert run.dtype["source_id"].kind == "S" and run.dtype["amount"] == np.int64
    _compare(saas, erp)
    assert not any(d.exists() for d in directories)


def test_the_directories_are_removed_when_the_diff_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    saas_rows, erp_rows = _random_sides(seed=4, n=400)
    saas, erp = _build(saas_rows, erp=False, spill_rows=50), _build(erp_rows, erp=True, spill_rows=50)
    directories = [saas.directory.name, erp.directory.name]  # type: ignore[union-attr]
    calls = []
    real_diff = core.diff_records

    def failing_diff(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("diff failed")
        return real_diff(*args, **kwargs)

    monkeypatch.setattr(core, "diff_records", failing_diff)
    with pytest.raises(RuntimeError, match="diff failed"):
        _compare(saas, erp)
    assert len(calls) == 3
    assert not any(os.path.exists(d) for d in directories)


def test_a_builder_whose_read_fails_removes_its_files() -> None:
    saas_rows, _ = _random_sides(seed=6, n=300)
    with (
        pytest.raises(ValueError, match="read failed"),
        SideBuilder("charges", METRICS, spill_rows=10) as builder,
    ):
        builder.add_scaled(saas_rows.iloc[:100])
        directory = builder._spill.directory.name  # type: ignore[union-attr]
        assert os.path.isdir(directory)
        raise ValueError("read failed")
    assert not os.path.exists(directory)


def test_an_unspilled_side_has_no_directory_and_frame_refuses_a_spilled_builder() -> None:
    saas_rows, _ = _random_sides(seed=7, n=200)
    small = _build(saas_rows, erp=False, spill_rows=10**9)
    assert not small.spilled and small.directory is None
    builder = SideBuilder("charges", METRICS, spill_rows=10)
    builder.add_scaled(saas_rows)
    with pytest.raises(RuntimeError, match="spilled"):
        builder.frame()
    builder.finish().close()


def test_bucket_ranges_stay_under_the_limit_unless_one_bucket_is_bigger() -> None:
    counts = np.array([3, 0, 4, 9, 1, 1, 0, 2, 0, 0])
    ranges = list(bucket_ranges(counts, limit=5))
    assert ranges == [(0, 2), (2, 3), (3, 4), (4, 10)]
    assert list(bucket_ranges(np.zeros(4, dtype=np.int64), limit=5)) == []
