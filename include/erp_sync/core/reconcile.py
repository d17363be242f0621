"""Reconciliation: compare the SaaS side with the ERP side, totals first, then record by record.

Pure and fast: no I/O, no Airflow. Each side is a DataFrame of
`(stream, source_id, currency_code, status, <metric columns>)` with metrics in major units as
`Decimal` (or already scaled integers, see `SideBuilder.add_scaled`). Internally every amount is an
int64 count of thousandths of a major unit (`SCALE` = 3 decimal places, the precision of the
staging NUMERIC columns), which is exact for every currency exponent 0..3: comparisons and sums are
integer arithmetic, never floats. Status and currency are categoricals, keys are strings, and the
record diff is one hash merge on `source_id` per stream, so a million records stay in a few hundred
megabytes.

Tolerances are configured per stream and currency: absolute in the currency's minor units, and
relative (a fraction of the SaaS figure). A total or an item is within tolerance when
`|erp - saas| <= max(abs, rel * |saas|)`. Missing records and status mismatches are never within
tolerance; counts use only the relative tolerance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

import numpy as np
import pandas as pd

from erp_sync.core.money import exponent

SCALE = 3
_POW10 = (1, 10, 100, 1000)

ItemKind = Literal["missing_in_erp", "missing_in_saas", "amount_mismatch", "status_mismatch"]
ReportStatus = Literal["OK", "DRIFT", "ERROR"]

# Which amounts are compared for each staging table, and which timestamp puts a row in a period.
METRICS_BY_TABLE: dict[str, tuple[str, ...]] = {
    "ar_invoices": ("total_amount",),
    "ar_receipts": ("amount", "amount_refunded"),
    "ar_credit_memos": ("total_amount",),
    "sales_orders": ("total_amount",),
}
PERIOD_COLUMN_BY_TABLE: dict[str, str] = {
    "ar_invoices": "issued_at",
    "ar_receipts": "received_at",
    "ar_credit_memos": "issued_at",
    "sales_orders": "ordered_at",
}

ITEM_COLUMNS = (
    "stream",
    "source_id",
    "kind",
    "metric",
    "currency_code",
    "erp_currency_code",
    "saas_amount",
    "erp_amount",
    "saas_status",
    "erp_status",
    "difference",
    "erp_batch_id",
    "exceeds_tolerance",
)


def currency_exponent(currency_code: str) -> int:
    """Digits after the decimal point of the currency's minor unit (JPY 0, USD 2, KWD 3); one table
    for the whole project (`erp_sync.core.money`), so an unknown code is an error, not a guess."""
    return exponent(currency_code)


def to_scaled(value: Decimal | int | str) -> int:
    """A major-unit amount as an exact integer of thousandths; refuses anything finer."""
    dec = value if isinstance(value, Decimal) else Decimal(value)
    scaled = dec.scaleb(SCALE)
    integral = scaled.to_integral_value()
    if scaled != integral:
        raise ValueError(f"amount {value} has more than {SCALE} decimal places")
    return int(integral)


def from_scaled(value: int) -> Decimal:
    """Thousandths back to a major-unit Decimal with exactly SCALE places."""
    return Decimal(int(value)).scaleb(-SCALE)


def decimals_to_scaled(values: Iterable[Any]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """A column of Decimals (or numeric strings/ints) as int64 thousandths; None/NaN is an error."""
    out: list[int] = []
    for value in values:
        if value is None or (isinstance(value, float)) or value is pd.NA:
            raise ValueError(f"amount must be a Decimal, got {value!r}")
        out.append(to_scaled(value))
    return np.asarray(out, dtype=np.int64)


@dataclass(frozen=True)
class Tolerance:
    """Allowed difference: `abs_minor` in the currency's minor units, `rel` a fraction (0.001 = 0.1 %)."""

    abs_minor: int = 0
    rel: Decimal = Decimal(0)

    def abs_scaled(self, currency_code: str) -> int:
        return self.abs_minor * _POW10[SCALE - currency_exponent(currency_code)]

    def allows(self, difference_scaled: int, saas_scaled: int, currency_code: str | None) -> bool:
        """Exact check of `|difference| <= max(abs, rel * |saas|)` in integers and fractions."""
        diff = abs(int(difference_scaled))
        if currency_code is not None and diff <= self.abs_scaled(currency_code):
            return True
        return Fraction(diff) <= Fraction(self.rel) * abs(int(saas_scaled))


@dataclass(frozen=True)
class ToleranceConfig:
    """Tolerances by (stream, currency), then by stream, then the default (exact)."""

    default: Tolerance = field(default_factory=Tolerance)
    by_stream: Mapping[str, Tolerance] = field(default_factory=dict)
    by_stream_currency: Mapping[tuple[str, str], Tolerance] = field(default_factory=dict)

    def for_(self, stream: str, currency_code: str) -> Tolerance:
        key = (stream, currency_code.upper())
        if key in self.by_stream_currency:
            return self.by_stream_currency[key]
        return self.by_stream.get(stream, self.default)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> ToleranceConfig:
        """Parse a params/Variable dict.

        Shape: `{"default": {"abs_minor": 0, "rel": "0"}, "invoices": {"abs_minor": 1},
        "invoices:JPY": {"abs_minor": 5, "rel": "0.001"}}`.
        """
        if not raw:
            return cls()
        default = Tolerance()
        by_stream: dict[str, Tolerance] = {}
        by_pair: dict[tuple[str, str], Tolerance] = {}
        for key, spec in raw.items():
            tol = _parse_tolerance(key, spec)
            if key == "default":
                default = tol
            elif ":" in key:
                stream, currency = key.split(":", 1)
                by_pair[(stream, currency.upper())] = tol
            else:
                by_stream[key] = tol
        return cls(default=default, by_stream=by_stream, by_stream_currency=by_pair)


def _parse_tolerance(key: str, spec: Any) -> Tolerance:
    if not isinstance(spec, Mapping):
        raise ValueError(f"tolerance {key!r} must be an object with abs_minor and/or rel, got {spec!r}")
    unknown = set(spec) - {"abs_minor", "rel"}
    if unknown:
        raise ValueError(f"tolerance {key!r} has unknown fields {sorted(unknown)}")
    abs_minor = spec.get("abs_minor", 0)
    if isinstance(abs_minor, bool) or not isinstance(abs_minor, int) or abs_minor < 0:
        raise ValueError(f"tolerance {key!r}: abs_minor must be a non-negative integer, got {abs_minor!r}")
    rel_raw = spec.get("rel", "0")
    if isinstance(rel_raw, float):
        rel_raw = repr(rel_raw)  # the literal the user wrote, not its binary approximation
    rel = Decimal(str(rel_raw))
    if not rel.is_finite() or rel < 0:
        raise ValueError(f"tolerance {key!r}: rel must be a non-negative number, got {rel_raw!r}")
    return Tolerance(abs_minor=abs_minor, rel=rel)


# --------------------------------------------------------------------------------------------
# Building a side


@dataclass
class SideBuilder:
    """Accumulates one side of one stream chunk by chunk in compact form (bounded memory).

    `metrics` are the amount columns compared for the stream; the ERP side also keeps the batch
    that last wrote each row (`sync_batch_id`).
    """

    stream: str
    metrics: tuple[str, ...]
    with_batch_id: bool = False
    _chunks: list[pd.DataFrame] = field(default_factory=list)

    def add(self, frame: pd.DataFrame) -> None:
        """Add rows whose metric columns hold Decimals in major units."""
        scaled = {m: decimals_to_scaled(frame[m]) for m in self.metrics}
        self._append(frame, scaled)

    def add_scaled(self, frame: pd.DataFrame) -> None:
        """Add rows whose metric columns already hold integer thousandths (e.g. from SQL)."""
        scaled = {m: frame[m].to_numpy(dtype=np.int64) for m in self.metrics}
        self._append(frame, scaled)

    def _append(self, frame: pd.DataFrame, scaled: Mapping[str, np.ndarray[Any, Any]]) -> None:
        if frame.empty:
            return
        data: dict[str, Any] = {
            "source_id": frame["source_id"].astype(object).to_numpy(),
            "currency_code": pd.Categorical(frame["currency_code"].astype(str).str.upper()),
            "status": pd.Categorical(frame["status"].astype(str)),
        }
        data.update(scaled)
        if self.with_batch_id:
            data["sync_batch_id"] = frame["sync_batch_id"].astype("Int64").to_numpy()
        self._chunks.append(pd.DataFrame(data))

    def frame(self) -> pd.DataFrame:
        """The side as one DataFrame; one row per source_id (the last one added wins)."""
        if not self._chunks:
            return empty_side(self.metrics, self.with_batch_id)
        frame = pd.concat(self._chunks, ignore_index=True) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks = [frame]
        for col in ("currency_code", "status"):
            if not isinstance(frame[col].dtype, pd.CategoricalDtype):
                frame[col] = frame[col].astype("category")
        if frame["source_id"].duplicated().any():
            frame = frame.drop_duplicates("source_id", keep="last").reset_index(drop=True)
            self._chunks = [frame]
        return frame


def empty_side(metrics: Sequence[str], with_batch_id: bool = False) -> pd.DataFrame:
    data: dict[str, Any] = {
        "source_id": pd.Series([], dtype=object),
        "currency_code": pd.Categorical([]),
        "status": pd.Categorical([]),
    }
    for metric in metrics:
        data[metric] = pd.Series([], dtype=np.int64)
    if with_batch_id:
        data["sync_batch_id"] = pd.Series([], dtype="Int64")
    return pd.DataFrame(data)


def side_from_frame(
    frame: pd.DataFrame, metrics: Sequence[str], *, scaled: bool = False, with_batch_id: bool = False
) -> pd.DataFrame:
    """One-shot `SideBuilder` for a frame that is already in memory (tests, small periods)."""
    builder = SideBuilder(stream="", metrics=tuple(metrics), with_batch_id=with_batch_id)
    if scaled:
        builder.add_scaled(frame)
    else:
        builder.add(frame)
    return builder.frame()


# --------------------------------------------------------------------------------------------
# Totals


@dataclass(frozen=True)
class TotalLine:
    """One row of drift_report_totals: one stream/currency/status/metric, both sides."""

    stream: str
    currency_code: str
    status: str
    metric: str  # a metric column, or "count"
    saas_count: int
    erp_count: int
    saas_sum: Decimal  # major units; for "count" the count itself
    erp_sum: Decimal
    difference: Decimal  # erp - saas
    tolerance_abs: Decimal  # major units (for "count": 0)
    tolerance_rel: Decimal
    within_tolerance: bool


def side_totals(side: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Counts and integer sums per (currency_code, status)."""
    cols = ["currency_code", "status"]
    if side.empty:
        return pd.DataFrame(columns=[*cols, "count", *metrics]).set_index(cols)
    keys = [side["currency_code"].astype(str), side["status"].astype(str)]
    grouped = side.groupby(keys, sort=True)
    totals = grouped[list(metrics)].sum() if metrics else pd.DataFrame(index=grouped.size().index)
    totals.insert(0, "count", grouped.size())
    totals.index.names = cols
    return totals


def compare_totals(
    stream: str,
    saas_t: pd.DataFrame,
    erp_t: pd.DataFrame,
    metrics: Sequence[str],
    tolerances: ToleranceConfig,
) -> list[TotalLine]:
    """Every (currency, status) seen on either side, each metric plus the count.

    Inputs are `side_totals`-shaped: indexed by (currency_code, status), columns `count` and the
    metrics as integer thousandths (the ERP side may come straight from a SQL GROUP BY).
    """
    index = saas_t.index.union(erp_t.index).sort_values()
    lines: list[TotalLine] = []
    for currency, status in index:
        s_row = saas_t.loc[(currency, status)] if (currency, status) in saas_t.index else None
        e_row = erp_t.loc[(currency, status)] if (currency, status) in erp_t.index else None
        s_count = int(s_row["count"]) if s_row is not None else 0
        e_count = int(e_row["count"]) if e_row is not None else 0
        tol = tolerances.for_(stream, str(currency))
        count_diff = e_count - s_count
        lines.append(
            TotalLine(
                stream=stream,
                currency_code=str(currency),
                status=str(status),
                metric="count",
                saas_count=s_count,
                erp_count=e_count,
                saas_sum=Decimal(s_count),
                erp_sum=Decimal(e_count),
                difference=Decimal(count_diff),
                tolerance_abs=Decimal(0),
                tolerance_rel=tol.rel,
                within_tolerance=tol.allows(count_diff, s_count, None),
            )
        )
        for metric in metrics:
            s_sum = int(s_row[metric]) if s_row is not None else 0
            e_sum = int(e_row[metric]) if e_row is not None else 0
            lines.append(
                TotalLine(
                    stream=stream,
                    currency_code=str(currency),
                    status=str(status),
                    metric=metric,
                    saas_count=s_count,
                    erp_count=e_count,
                    saas_sum=from_scaled(s_sum),
                    erp_sum=from_scaled(e_sum),
                    difference=from_scaled(e_sum - s_sum),
                    tolerance_abs=from_scaled(tol.abs_scaled(str(currency))),
                    tolerance_rel=tol.rel,
                    within_tolerance=tol.allows(e_sum - s_sum, s_sum, str(currency)),
                )
            )
    return lines


# --------------------------------------------------------------------------------------------
# Records


def _align_categories(left: pd.Series, right: pd.Series) -> tuple[pd.Series, pd.Series]:
    cats = pd.Index(left.cat.categories).union(pd.Index(right.cat.categories))
    return left.cat.set_categories(cats), right.cat.set_categories(cats)


def diff_records(
    stream: str,
    saas: pd.DataFrame,
    erp: pd.DataFrame,
    metrics: Sequence[str],
    tolerances: ToleranceConfig,
) -> pd.DataFrame:
    """Every record that differs, as rows with ITEM_COLUMNS (amounts in int thousandths).

    A record present on both sides yields one `status_mismatch` when the statuses differ and one
    `amount_mismatch` per metric that differs (or every metric, when the currencies differ).
    """
    saas = saas.copy(deep=False)
    erp = erp.copy(deep=False)
    for col in ("currency_code", "status"):
        saas[col], erp[col] = _align_categories(saas[col].astype("category"), erp[col].astype("category"))
    if "sync_batch_id" not in erp.columns:
        erp["sync_batch_id"] = pd.array([pd.NA] * len(erp), dtype="Int64")
    for metric in metrics:  # nullable ints: the outer merge must not turn amounts into floats
        saas[metric] = saas[metric].astype("Int64")
        erp[metric] = erp[metric].astype("Int64")
    saas_cols = ["source_id", "currency_code", "status", *metrics]
    erp_cols = [*saas_cols, "sync_batch_id"]
    merged = saas[saas_cols].merge(
        erp[erp_cols], on="source_id", how="outer", suffixes=("_saas", "_erp"), indicator=True, sort=False
    )
    where = merged["_merge"]
    parts: list[pd.DataFrame] = []
    primary = metrics[0] if metrics else None

    only_saas = merged[where == "left_only"]
    if len(only_saas):
        parts.append(_items(stream, only_saas, "missing_in_erp", primary, saas_side=True, erp_side=False))
    only_erp = merged[where == "right_only"]
    if len(only_erp):
        parts.append(_items(stream, only_erp, "missing_in_saas", primary, saas_side=False, erp_side=True))

    both = merged[where == "both"]
    if len(both):
        status_diff = both[both["status_saas"] != both["status_erp"]]
        if len(status_diff):
            parts.append(_items(stream, status_diff, "status_mismatch", primary, True, True))
        currency_diff = both["currency_code_saas"] != both["currency_code_erp"]
        for metric in metrics:
            changed = both[(both[f"{metric}_saas"] != both[f"{metric}_erp"]) | currency_diff]
            if len(changed):
                parts.append(_items(stream, changed, "amount_mismatch", metric, True, True))

    if not parts:
        return empty_items()
    items = pd.concat(parts, ignore_index=True)
    items["exceeds_tolerance"] = _exceeds(stream, items, tolerances)
    return items


def _items(
    stream: str,
    rows: pd.DataFrame,
    kind: ItemKind,
    metric: str | None,
    saas_side: bool,
    erp_side: bool,
) -> pd.DataFrame:
    n = len(rows)
    na_int = pd.array([pd.NA] * n, dtype="Int64")
    na_str = pd.array([None] * n, dtype=object)
    saas_amount = rows[f"{metric}_saas"].astype("Int64").array if saas_side and metric else na_int
    erp_amount = rows[f"{metric}_erp"].astype("Int64").array if erp_side and metric else na_int
    saas_currency = rows["currency_code_saas"].astype(object).to_numpy() if saas_side else na_str
    erp_currency = rows["currency_code_erp"].astype(object).to_numpy() if erp_side else na_str
    frame = pd.DataFrame(
        {
            "stream": stream,
            "source_id": rows["source_id"].astype(object).to_numpy(),
            "kind": kind,
            "metric": metric if kind == "amount_mismatch" else None,
            "currency_code": saas_currency if saas_side else erp_currency,
            "erp_currency_code": erp_currency,
            "saas_amount": saas_amount,
            "erp_amount": erp_amount,
            "saas_status": rows["status_saas"].astype(object).to_numpy() if saas_side else na_str,
            "erp_status": rows["status_erp"].astype(object).to_numpy() if erp_side else na_str,
            "erp_batch_id": rows["sync_batch_id"].astype("Int64").array if erp_side else na_int,
        },
        index=pd.RangeIndex(n),
    )
    frame.insert(10, "difference", _difference(frame["saas_amount"], frame["erp_amount"]))
    return frame


def _difference(saas: pd.Series, erp: pd.Series) -> pd.Series:
    """erp - saas, treating an absent side as zero (a missing record drifts by its whole amount)."""
    return erp.fillna(0) - saas.fillna(0)


def _exceeds(stream: str, items: pd.DataFrame, tolerances: ToleranceConfig) -> np.ndarray[Any, Any]:
    exceeds = np.ones(len(items), dtype=bool)
    amount_rows = np.flatnonzero(
        (items["kind"] == "amount_mismatch").to_numpy()
        & (items["currency_code"].astype(object) == items["erp_currency_code"].astype(object)).to_numpy()
    )
    for i in amount_rows:
        row = items.iloc[i]
        tol = tolerances.for_(stream, str(row["currency_code"]))
        exceeds[i] = not tol.allows(
            int(row["difference"]), int(row["saas_amount"]), str(row["currency_code"])
        )
    return exceeds


def empty_items() -> pd.DataFrame:
    frame = pd.DataFrame({col: pd.Series([], dtype=object) for col in ITEM_COLUMNS})
    for col in ("saas_amount", "erp_amount", "difference", "erp_batch_id"):
        frame[col] = frame[col].astype("Int64")
    frame["exceeds_tolerance"] = frame["exceeds_tolerance"].astype(bool)
    return frame


# --------------------------------------------------------------------------------------------
# The whole comparison


@dataclass
class StreamResult:
    stream: str
    totals: list[TotalLine]
    items: pd.DataFrame
    saas_records: int
    erp_records: int


@dataclass
class ReconcileResult:
    """Totals and items for every stream, and the verdict."""

    streams: list[StreamResult]

    @property
    def totals(self) -> list[TotalLine]:
        return [line for s in self.streams for line in s.totals]

    @property
    def items(self) -> pd.DataFrame:
        """All items, ordered by stream, kind, source_id, metric (a stable, reproducible order)."""
        frames = [s.items for s in self.streams if len(s.items)]
        if not frames:
            return empty_items()
        items = pd.concat(frames, ignore_index=True)
        order = items.assign(_m=items["metric"].fillna("")).sort_values(
            ["stream", "kind", "source_id", "_m"], kind="stable"
        )
        return items.loc[order.index].reset_index(drop=True)

    @property
    def status(self) -> ReportStatus:
        if any(not line.within_tolerance for line in self.totals):
            return "DRIFT"
        if any(bool(s.items["exceeds_tolerance"].any()) for s in self.streams if len(s.items)):
            return "DRIFT"
        return "OK"

    def item_counts(self) -> dict[str, int]:
        """Items per kind (every kind present, zero when none)."""
        counts = dict.fromkeys(("missing_in_erp", "missing_in_saas", "amount_mismatch", "status_mismatch"), 0)
        for s in self.streams:
            for kind, n in s.items["kind"].value_counts().items():
                counts[str(kind)] += int(n)
        return counts

    def drifted_totals(self) -> list[TotalLine]:
        return [line for line in self.totals if not line.within_tolerance]


def reconcile_stream(
    stream: str,
    saas: pd.DataFrame,
    erp: pd.DataFrame,
    metrics: Sequence[str],
    tolerances: ToleranceConfig,
    erp_totals: pd.DataFrame | None = None,
) -> StreamResult:
    """Compare one stream's two compact sides (see `SideBuilder`).

    `erp_totals` (from SQL aggregates) replaces totals computed from the ERP records when given.
    """
    erp_t = erp_totals if erp_totals is not None else side_totals(erp, metrics)
    return StreamResult(
        stream=stream,
        totals=compare_totals(stream, side_totals(saas, metrics), erp_t, metrics, tolerances),
        items=diff_records(stream, saas, erp, metrics, tolerances),
        saas_records=len(saas),
        erp_records=len(erp),
    )


def reconcile(
    saas: pd.DataFrame,
    erp: pd.DataFrame,
    metrics_by_stream: Mapping[str, Sequence[str]],
    tolerances: ToleranceConfig | None = None,
) -> ReconcileResult:
    """Reconcile two DataFrames with a `stream` column and Decimal metric columns.

    Streams listed in `metrics_by_stream` are compared even when both sides are empty (an empty
    period reconciles to OK with zero counts). The ERP frame may carry `sync_batch_id`.
    """
    tolerances = tolerances or ToleranceConfig()
    results: list[StreamResult] = []
    with_batch = "sync_batch_id" in erp.columns
    for stream, metrics in metrics_by_stream.items():
        mets = tuple(metrics)
        s_rows = saas[saas["stream"] == stream] if len(saas) else saas
        e_rows = erp[erp["stream"] == stream] if len(erp) else erp
        s_side = side_from_frame(s_rows, mets) if len(s_rows) else empty_side(mets)
        e_side = (
            side_from_frame(e_rows, mets, with_batch_id=with_batch)
            if len(e_rows)
            else empty_side(mets, with_batch)
        )
        results.append(reconcile_stream(stream, s_side, e_side, mets, tolerances))
    return ReconcileResult(streams=results)
