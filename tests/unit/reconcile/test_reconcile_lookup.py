"""Records only the ERP side holds are looked up by id: those found compare exactly as if the listing
had returned them, in memory and spilled; the limit bounds what is asked and counts the rest."""

from __future__ import annotations

import pandas as pd
import pytest

from erp_sync.core.reconcile import LookedUp, LookupById, SideBuilder, StreamResult, reconcile_stream
from tests.unit.reconcile.test_reconcile_spill import METRICS, TOLERANCES, _assert_same, _build, _random_sides


class _SaasById:
    """The SaaS answering by id from its own records (a double of the HTTP lookup: a pure function)."""

    def __init__(self, records: pd.DataFrame) -> None:
        self.records = records.set_index("source_id", drop=False)
        self.asked: list[list[str]] = []

    def find(self, ids: list[str]) -> pd.DataFrame:
        self.asked.append(list(ids))
        known = [i for i in ids if i in self.records.index]
        return self.records.loc[known].reset_index(drop=True)


def _hidden_from_listing(
    saas_rows: pd.DataFrame, erp_rows: pd.DataFrame, every: int
) -> tuple[pd.DataFrame, set[str]]:
    """The SaaS rows minus every `every`-th id the ERP side also holds (dated in the period, listed before it)."""
    both = sorted(set(saas_rows["source_id"]) & set(erp_rows["source_id"]))
    hidden = set(both[::every])
    return saas_rows[~saas_rows["source_id"].isin(hidden)], hidden


def _whole_saas_side(saas_rows: pd.DataFrame) -> pd.DataFrame:
    return _build(saas_rows, erp=False, spill_rows=10**9).frame


def _compare(saas, erp, lookup: LookupById | None) -> StreamResult:
    return reconcile_stream("charges", saas, erp, METRICS, TOLERANCES, lookup=lookup)


def _in_memory(saas_rows: pd.DataFrame, erp_rows: pd.DataFrame) -> StreamResult:
    """The two sides compared in memory, without lookups."""
    return _compare(
        _build(saas_rows, erp=False, spill_rows=10**9), _build(erp_rows, erp=True, spill_rows=10**9), None
    )


def _looking_up(
    listed: pd.DataFrame, erp_rows: pd.DataFrame, spill_rows: int, lookup: LookupById
) -> StreamResult:
    return _compare(
        _build(listed, erp=False, spill_rows=spill_rows),
        _build(erp_rows, erp=True, spill_rows=spill_rows),
        lookup,
    )


@pytest.mark.parametrize("spill_rows", [10**9, 60], ids=["in-memory", "spilled"])
def test_records_found_by_id_compare_as_if_listed(spill_rows: int) -> None:
    saas_rows, erp_rows = _random_sides(seed=11)
    listed, hidden = _hidden_from_listing(saas_rows, erp_rows, every=7)
    as_if_listed = _in_memory(saas_rows, erp_rows)

    saas = _SaasById(_whole_saas_side(saas_rows))
    result = _looking_up(listed, erp_rows, spill_rows, LookupById(limit=10_000, find=saas.find))

    _assert_same(result, as_if_listed)
    asked = {i for call in saas.asked for i in call}
    assert hidden <= asked  # and the ids the SaaS never had, which stay missing_in_saas
    assert result.looked_up == LookedUp(asked=len(asked), found=len(hidden), unasked=0)


def test_without_a_lookup_the_hidden_records_are_missing_in_saas() -> None:
    saas_rows, erp_rows = _random_sides(seed=12)
    listed, hidden = _hidden_from_listing(saas_rows, erp_rows, every=5)
    result = _in_memory(listed, erp_rows)
    missing = set(result.items.loc[result.items["kind"] == "missing_in_saas", "source_id"])
    assert hidden <= missing
    assert result.looked_up.asked == 0 and result.looked_up.unasked == len(missing)


@pytest.mark.parametrize("spill_rows", [10**9, 60], ids=["in-memory", "spilled"])
def test_the_limit_bounds_the_ids_asked_and_counts_the_rest(spill_rows: int) -> None:
    saas_rows, erp_rows = _random_sides(seed=13)
    listed, hidden = _hidden_from_listing(saas_rows, erp_rows, every=3)
    unlimited = _in_memory(listed, erp_rows)
    missing_before = int((unlimited.items["kind"] == "missing_in_saas").sum())
    saas = _SaasById(_whole_saas_side(saas_rows))

    result = _looking_up(listed, erp_rows, spill_rows, LookupById(limit=25, find=saas.find))

    assert len(saas.asked) == 1 and len(saas.asked[0]) == 25
    found = result.looked_up.found
    assert result.looked_up == LookedUp(asked=25, found=found, unasked=missing_before - 25)
    assert found == len(hidden & set(saas.asked[0])) > 0
    assert int((result.items["kind"] == "missing_in_saas").sum()) == missing_before - found
    assert result.saas_records == unlimited.saas_records + found


def test_a_found_record_that_differs_is_a_mismatch_with_its_erp_batch() -> None:
    erp = SideBuilder("charges", METRICS, with_batch_id=True)
    erp.add_scaled(
        pd.DataFrame(
            {"source_id": ["ch_1"], "currency_code": ["USD"], "status": ["paid"], "amount": [5_000],
             "amount_refunded": [0], "sync_batch_id": pd.array([42], dtype="Int64")}
        )
    )  # fmt: skip
    saas = SideBuilder("charges", METRICS)
    saas.add_scaled(
        pd.DataFrame(
            {"source_id": ["ch_1"], "currency_code": ["USD"], "status": ["refunded"], "amount": [5_000],
             "amount_refunded": [5_000]}
        )
    )  # fmt: skip
    empty = SideBuilder("charges", METRICS).finish()

    result = _compare(empty, erp.finish(), LookupById(limit=10, find=_SaasById(saas.frame()).find))

    kinds = sorted(zip(result.items["kind"], result.items["metric"].fillna(""), strict=True))
    assert kinds == [("amount_mismatch", "amount_refunded"), ("status_mismatch", "")]
    assert set(result.items["erp_batch_id"]) == {42}
    assert result.looked_up == LookedUp(asked=1, found=1, unasked=0)
