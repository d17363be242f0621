"""Reconciliation: compare the SaaS side with the ERP side, totals first, then record by record.

Pure and fast: no network or database I/O, no Airflow. Each side is a DataFrame of
`(stream, source_id, currency_code, status, <metric columns>)` with metrics in major units as
`Decimal` (or already scaled integers, see `SideBuilder.add_scaled`). Internally every amount is an
int64 count of thousandths of a major unit (`SCALE` = 3 decimal places, the precision of the
staging NUMERIC columns), which is exact for every currency exponent 0..3: comparisons and sums are
integer arithmetic, never floats. Status and currency are categoricals, keys are strings, and the
record diff is one hash merge on `source_id` per stream. A side longer than `SPILL_ROWS` spills to
hash buckets in a private temporary directory and is compared one bucket range at a time, so memory
does not grow with the period (docs/adr/0007-reconcile-spills-by-hash-partition.md).

Tolerances are configured per stream and currency: absolute in the currency's minor units, and
relative (a fraction of the SaaS figure). A total or an item is within tolerance when
`|erp - saas| <= max(abs, rel * |saas|)`. Missing records and status mismatches are never within
tolerance; counts use only the relative tolerance.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from types import TracebackType
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


SPILL_ROWS = 500_000
"""Rows a side keeps in memory as a frame before it spills to disk; also the most rows (both sides
together) one step of a spilled comparison holds."""
SPILL_BUCKETS = 4096
"""Hash buckets (crc32 of the UTF-8 source_id) that a spilled side's rows are sorted into."""

_Array = np.ndarray[Any, Any]


@dataclass
class SideBuilder:
    """Accumulates one side of one stream chunk by chunk in compact form (bounded memory).

    `metrics` are the amount columns compared for the stream; the ERP side also keeps the batch
    that last wrote each row (`sync_batch_id`). Up to `spill_rows` rows stay in memory as a frame;
    past that every row is written to hash-bucketed files in a private temporary directory (see
    `Side`). As a context manager, a builder whose block raises removes its files.
    """

    stream: str
    metrics: tuple[str, ...]
    with_batch_id: bool = False
    spill_rows: int = field(default_factory=lambda: SPILL_ROWS)  # read when built: tests lower it
    _chunks: list[pd.DataFrame] = field(default_factory=list)
    _buffered_rows: int = 0
    _spill: _SpillWriter | None = None

    def __enter__(self) -> SideBuilder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.discard()

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
        chunk = pd.DataFrame(data)
        if self._spill is not None:
            self._spill.add(chunk)
            return
        self._chunks.append(chunk)
        self._buffered_rows += len(chunk)
        if self._buffered_rows > self.spill_rows:
            self._start_spilling()

    def _start_spilling(self) -> None:
        self._spill = _SpillWriter(_Layout(self.metrics, self.with_batch_id), run_rows=self.spill_rows)
        for chunk in self._chunks:
            self._spill.add(chunk)
        self._chunks, self._buffered_rows = [], 0

    def frame(self) -> pd.DataFrame:
        """The side as one DataFrame; one row per source_id (the last one added wins).

        Only for a side that has not spilled; `finish` serves both.
        """
        if self._spill is not None:
            raise RuntimeError(f"the {self.stream!r} side spilled to disk: use finish()")
        if not self._chunks:
            return empty_side(self.metrics, self.with_batch_id)
        frame = pd.concat(self._chunks, ignore_index=True) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks = [frame]
        for col in ("currency_code", "status"):
            if not isinstance(frame[col].dtype, pd.CategoricalDtype):
                frame[col] = frame[col].astype("category")
        frame = _last_copy_wins(frame)
        self._chunks = [frame]
        return frame

    def finish(self) -> Side:
        """The side to compare: its frame, or its spilled files (which the `Side` then owns)."""
        if self._spill is None:
            return Side(self.metrics, self.with_batch_id, self.spill_rows, frame=self.frame())
        return self._spill.finish(self.spill_rows)

    def discard(self) -> None:
        """Remove whatever was spilled (the read failed; nothing will compare this side)."""
        if self._spill is not None:
            self._spill.directory.cleanup()


def _last_copy_wins(frame: pd.DataFrame) -> pd.DataFrame:
    if frame["source_id"].duplicated().any():
        return frame.drop_duplicates("source_id", keep="last").reset_index(drop=True)
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
# Spilling a side: hash buckets on local disk


@dataclass(frozen=True)
class _Layout:
    metrics: tuple[str, ...]
    with_batch_id: bool

    def dtype(self, id_width: int) -> np.dtype[np.void]:
        """One spilled row: the UTF-8 source_id as fixed-width bytes, small codes, int64 amounts."""
        fields: list[tuple[str, Any]] = [
            ("source_id", f"S{id_width}"),
            ("currency_code", np.int32),
            ("status", np.int32),
        ]
        fields += [(metric, np.int64) for metric in self.metrics]
        if self.with_batch_id:
            fields += [("sync_batch_id", np.int64), ("sync_batch_missing", np.bool_)]
        return np.dtype(fields)


class _Codes:
    """int32 codes for a text column's values (currency, status), in order of first appearance."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._codes: dict[str, int] = {}

    def encode(self, column: pd.Series) -> _Array:
        codes, uniques = pd.factorize(column)
        table = np.array([self._code(str(value)) for value in uniques], dtype=np.int32)
        return table[codes]

    def _code(self, value: str) -> int:
        if value not in self._codes:
            self._codes[value] = len(self.values)
            self.values.append(value)
        return self._codes[value]


def _encode(
    frame: pd.DataFrame, layout: _Layout, currencies: _Codes, statuses: _Codes
) -> tuple[_Array, _Array]:
    """A side's rows as a compact structured array, and each row's hash bucket."""
    ids = [source_id.encode() for source_id in frame["source_id"].tolist()]
    # crc32, not hash(): Python salts str hashes per process; the bucket must mean the same on both sides.
    buckets = np.fromiter(map(zlib.crc32, ids), dtype=np.uint32, count=len(ids)) % SPILL_BUCKETS
    source_ids = np.array(ids, dtype=bytes)
    rows = np.empty(len(ids), dtype=layout.dtype(source_ids.dtype.itemsize))
    rows["source_id"] = source_ids
    rows["currency_code"] = currencies.encode(frame["currency_code"])
    rows["status"] = statuses.encode(frame["status"])
    for metric in layout.metrics:
        rows[metric] = frame[metric].to_numpy(dtype=np.int64)
    if layout.with_batch_id:
        batch_ids = frame["sync_batch_id"].astype("Int64").array
        rows["sync_batch_id"] = batch_ids.to_numpy(dtype=np.int64, na_value=0)
        rows["sync_batch_missing"] = batch_ids.isna()
    return rows, buckets


def _decode(
    rows: _Array, layout: _Layout, currencies: Sequence[str], statuses: Sequence[str]
) -> pd.DataFrame:
    """Spilled rows back in the form `SideBuilder.frame` gives (duplicates not yet removed)."""
    data: dict[str, Any] = {
        "source_id": np.array([raw.decode() for raw in rows["source_id"].tolist()], dtype=object),
        "currency_code": _categorical(rows["currency_code"], currencies),
        "status": _categorical(rows["status"], statuses),
    }
    for metric in layout.metrics:
        data[metric] = rows[metric].astype(np.int64)
    if layout.with_batch_id:
        data["sync_batch_id"] = pd.arrays.IntegerArray(
            rows["sync_batch_id"].astype(np.int64), rows["sync_batch_missing"].astype(bool)
        )
    return pd.DataFrame(data)


def _categorical(codes: np.ndarray[Any, np.dtype[np.int32]], values: Sequence[str]) -> pd.Categorical[str]:
    return pd.Categorical.from_codes(codes, categories=pd.Index(values))


def _sorted_by_bucket(rows: _Array, buckets: _Array) -> tuple[_Array, _Array]:
    """The rows ordered by bucket, and where each bucket starts (bucket b is `[starts[b], starts[b+1])`)."""
    order = np.argsort(buckets, kind="stable")  # stable: a source_id's copies keep their order
    starts = np.zeros(SPILL_BUCKETS + 1, dtype=np.int64)
    np.cumsum(np.bincount(buckets, minlength=SPILL_BUCKETS), out=starts[1:])
    return rows[order], starts


@dataclass(frozen=True)
class _Run:
    """Consecutive rows of one side sorted by bucket: a `.npy` file, or an array in memory."""

    starts: _Array
    path: str | None = None
    rows: _Array | None = None

    def has_rows(self, first: int, stop: int) -> bool:
        return bool(self.starts[stop] > self.starts[first])

    def read(self, first: int, stop: int) -> _Array:
        """The rows of buckets `[first, stop)`, as a copy."""
        window = slice(int(self.starts[first]), int(self.starts[stop]))
        if self.rows is not None:
            return self.rows[window]
        mapped = np.load(self.path, mmap_mode="r")  # type: ignore[arg-type]
        return np.array(mapped[window])  # the mapping is dropped on return: only the copy stays


@dataclass(frozen=True)
class _Buckets:
    """A side's rows as runs sorted by hash bucket; read back one range of buckets at a time."""

    layout: _Layout
    currencies: tuple[str, ...]
    statuses: tuple[str, ...]
    runs: tuple[_Run, ...]

    def counts(self) -> _Array:
        total = np.zeros(SPILL_BUCKETS, dtype=np.int64)
        for run in self.runs:
            total += np.diff(run.starts)
        return total

    def frame(self, first: int, stop: int) -> pd.DataFrame:
        """The side's rows in buckets `[first, stop)`, one per source_id (the last one added wins)."""
        parts = [run.read(first, stop) for run in self.runs if run.has_rows(first, stop)]
        if not parts:
            return empty_side(self.layout.metrics, self.layout.with_batch_id)
        rows = np.concatenate(parts)  # runs in the order written, so the last copy stays last
        return _last_copy_wins(_decode(rows, self.layout, self.currencies, self.statuses))


def _buckets_in_memory(frame: pd.DataFrame, layout: _Layout) -> _Buckets:
    currencies, statuses = _Codes(), _Codes()
    rows, buckets = _encode(frame, layout, currencies, statuses)
    sorted_rows, starts = _sorted_by_bucket(rows, buckets)
    run = _Run(starts=starts, rows=sorted_rows)
    return _Buckets(layout, tuple(currencies.values), tuple(statuses.values), (run,))


class _SpillWriter:
    """Encodes a side's chunks and writes them, every `run_rows` rows, as one bucket-sorted run."""

    def __init__(self, layout: _Layout, run_rows: int) -> None:
        self.layout = layout
        self.run_rows = run_rows
        self.directory = tempfile.TemporaryDirectory(prefix="erp-sync-reconcile-")
        self.currencies, self.statuses = _Codes(), _Codes()
        self.runs: list[_Run] = []
        self._pending: list[tuple[_Array, _Array]] = []
        self._pending_rows = 0

    def add(self, chunk: pd.DataFrame) -> None:
        self._pending.append(_encode(chunk, self.layout, self.currencies, self.statuses))
        self._pending_rows += len(chunk)
        if self._pending_rows >= self.run_rows:
            self._write_run()

    def _write_run(self) -> None:
        rows = np.concatenate([rows for rows, _ in self._pending])
        buckets = np.concatenate([buckets for _, buckets in self._pending])
        self._pending, self._pending_rows = [], 0
        sorted_rows, starts = _sorted_by_bucket(rows, buckets)
        path = os.path.join(self.directory.name, f"run-{len(self.runs):06d}.npy")
        np.save(path, sorted_rows, allow_pickle=False)
        self.runs.append(_Run(starts=starts, path=path))

    def finish(self, spill_rows: int) -> Side:
        if self._pending:
            self._write_run()
        buckets = _Buckets(
            self.layout, tuple(self.currencies.values), tuple(self.statuses.values), tuple(self.runs)
        )
        return Side(
            self.layout.metrics,
            self.layout.with_batch_id,
            spill_rows,
            buckets=buckets,
            directory=self.directory,
        )


@dataclass
class Side:
    """One stream's side, ready to compare: the whole `frame` in memory, or (spilled) its rows
    in runs sorted by hash bucket in a private temporary directory, read back a range of buckets at
    a time. `close()` (or leaving a `with` block) removes the directory; `reconcile_stream` closes
    the sides it compares."""

    metrics: tuple[str, ...]
    with_batch_id: bool
    spill_rows: int = field(default_factory=lambda: SPILL_ROWS)
    frame: pd.DataFrame | None = None
    buckets: _Buckets | None = None
    directory: tempfile.TemporaryDirectory[str] | None = None

    @property
    def spilled(self) -> bool:
        return self.frame is None

    def __len__(self) -> int:
        """Records in memory (one per source_id), or rows spilled (copies of a source_id included)."""
        if self.frame is not None:
            return len(self.frame)
        return int(self.bucketed().counts().sum())

    def bucketed(self) -> _Buckets:
        """The rows by hash bucket; a side in memory is bucketed in memory (it is small)."""
        if self.frame is not None:
            return _buckets_in_memory(self.frame, _Layout(self.metrics, self.with_batch_id))
        if self.buckets is None:
            raise ValueError("a Side holds either a frame or spilled buckets")
        return self.buckets

    def close(self) -> None:
        if self.directory is not None:
            self.directory.cleanup()

    def __enter__(self) -> Side:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def bucket_ranges(counts: _Array, limit: int) -> Iterator[tuple[int, int]]:
    """Consecutive bucket ranges `[first, stop)` of at most `limit` rows each; a bucket bigger than
    `limit` is a range of its own. No range when every bucket is empty."""
    first, rows = 0, 0
    for bucket, count in enumerate(counts.tolist()):
        if rows and rows + count > limit:
            yield first, bucket
            first, rows = bucket, 0
        rows += count
    if rows:
        yield first, len(counts)


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


@dataclass(frozen=True)
class LookupById:
    """Asks the SaaS, by id, about records the listing did not return but the ERP holds.

    A listing can miss a record that belongs to the period (listed by creation, dated by
    finalization or payment). `find` receives up to `limit` such ids and returns the SaaS side's rows
    (as `side_from_frame` builds them) of those that exist and fall in the period; those are compared
    like listed records instead of being reported `missing_in_saas`.
    """

    limit: int
    find: Callable[[list[str]], pd.DataFrame]


@dataclass(frozen=True)
class LookedUp:
    """What `LookupById` did for one stream: ids asked, found in the period, left unasked (over the limit)."""

    asked: int = 0
    found: int = 0
    unasked: int = 0


@dataclass
class StreamResult:
    stream: str
    totals: list[TotalLine]
    items: pd.DataFrame
    saas_records: int
    erp_records: int
    looked_up: LookedUp = field(default_factory=LookedUp)


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
    saas: pd.DataFrame | Side,
    erp: pd.DataFrame | Side,
    metrics: Sequence[str],
    tolerances: ToleranceConfig,
    erp_totals: pd.DataFrame | None = None,
    lookup: LookupById | None = None,
) -> StreamResult:
    """Compare one stream's two compact sides (see `SideBuilder`), closing them (their spilled
    files are removed, also when the comparison raises).

    Two sides in memory are compared whole. When either spilled, both are compared one range of
    hash buckets at a time: a source_id falls in the same bucket on both sides, so the items and
    totals are those of the whole comparison, and at most `spill_rows` rows of the two sides
    together are in memory at once. `erp_totals` (from SQL aggregates) replaces totals computed
    from the ERP records when given. With `lookup`, records only the ERP side holds are looked up
    by id first (see `LookupById`).
    """
    with _as_side(saas, metrics) as saas_side, _as_side(erp, metrics) as erp_side:
        pairs = _side_pairs(saas_side, erp_side)
        return _compare_pairs(stream, pairs, metrics, tolerances, erp_totals, lookup)


def _as_side(side: pd.DataFrame | Side, metrics: Sequence[str]) -> Side:
    if isinstance(side, Side):
        return side
    return Side(tuple(metrics), "sync_batch_id" in side.columns, frame=side)


def _side_pairs(saas: Side, erp: Side) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """The two sides whole, or (when either spilled) both cut into the same bucket ranges."""
    if saas.frame is not None and erp.frame is not None:
        yield saas.frame, erp.frame
        return
    saas_buckets, erp_buckets = saas.bucketed(), erp.bucketed()
    limit = min(saas.spill_rows, erp.spill_rows)
    for first, stop in bucket_ranges(saas_buckets.counts() + erp_buckets.counts(), limit):
        yield saas_buckets.frame(first, stop), erp_buckets.frame(first, stop)


def _compare_pairs(
    stream: str,
    pairs: Iterable[tuple[pd.DataFrame, pd.DataFrame]],
    metrics: Sequence[str],
    tolerances: ToleranceConfig,
    erp_totals: pd.DataFrame | None,
    lookup: LookupById | None = None,
) -> StreamResult:
    items: list[pd.DataFrame] = []
    saas_totals: list[pd.DataFrame] = []
    erp_record_totals: list[pd.DataFrame] = []
    erp_only = _ErpOnly(lookup.limit if lookup else 0)
    saas_records = erp_records = 0
    for saas, erp in pairs:
        pair_items = diff_records(stream, saas, erp, metrics, tolerances)
        items.append(pair_items)
        erp_only.keep(pair_items, erp)
        saas_totals.append(side_totals(saas, metrics))
        if erp_totals is None:
            erp_record_totals.append(side_totals(erp, metrics))
        saas_records += len(saas)
        erp_records += len(erp)
    looked_up = LookedUp(unasked=erp_only.over_limit)
    if lookup is not None and erp_only.rows:
        found, looked_up = erp_only.look_up(lookup)
        if len(found):
            # The found records were in no pair's SaaS side: compared now, they are one more pair.
            found_ids = set(found["source_id"])
            items = [_without_missing_in_saas(part, found_ids) for part in items]
            items.append(diff_records(stream, found, erp_only.of(found_ids), metrics, tolerances))
            saas_totals.append(side_totals(found, metrics))
            saas_records += len(found)
    erp_t = erp_totals if erp_totals is not None else _sum_totals(erp_record_totals, metrics)
    return StreamResult(
        stream=stream,
        totals=compare_totals(stream, _sum_totals(saas_totals, metrics), erp_t, metrics, tolerances),
        items=_concat_items(items),
        saas_records=saas_records,
        erp_records=erp_records,
        looked_up=looked_up,
    )


class _ErpOnly:
    """The ERP rows of the `missing_in_saas` items, up to `limit` of them (the rest only counted)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.rows: list[pd.DataFrame] = []
        self.kept = 0
        self.over_limit = 0

    def keep(self, items: pd.DataFrame, erp: pd.DataFrame) -> None:
        if not len(items):
            return
        ids = items.loc[items["kind"] == "missing_in_saas", "source_id"]
        room = max(self.limit - self.kept, 0)
        self.over_limit += max(len(ids) - room, 0)
        if room and len(ids):
            rows = erp[erp["source_id"].isin(ids.iloc[:room])]
            self.rows.append(rows)
            self.kept += len(rows)

    def look_up(self, lookup: LookupById) -> tuple[pd.DataFrame, LookedUp]:
        ids = [str(i) for frame in self.rows for i in frame["source_id"]]
        found = lookup.find(ids)
        found = found[found["source_id"].isin(ids)]  # only what was asked
        return found, LookedUp(asked=len(ids), found=len(found), unasked=self.over_limit)

    def of(self, ids: set[str]) -> pd.DataFrame:
        rows = pd.concat(self.rows, ignore_index=True) if len(self.rows) > 1 else self.rows[0]
        return rows[rows["source_id"].isin(ids)].reset_index(drop=True)


def _without_missing_in_saas(items: pd.DataFrame, ids: set[str]) -> pd.DataFrame:
    if not len(items):
        return items
    drop = (items["kind"] == "missing_in_saas") & items["source_id"].isin(ids)
    return items[~drop].reset_index(drop=True) if drop.any() else items


def _sum_totals(parts: list[pd.DataFrame], metrics: Sequence[str]) -> pd.DataFrame:
    """`side_totals` of the parts' union (the parts share no record)."""
    if len(parts) == 1:
        return parts[0]
    filled = [part for part in parts if len(part)]
    if not filled:
        return side_totals(empty_side(metrics), metrics)
    return pd.concat(filled).groupby(level=["currency_code", "status"], sort=True).sum()


def _concat_items(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if len(parts) == 1:
        return parts[0]
    found = [part for part in parts if len(part)]
    return pd.concat(found, ignore_index=True) if found else empty_items()


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
