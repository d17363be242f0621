"""Validate + transform: pages of source records -> one DataFrame per `erp_staging` table.

`map_pages(spec, pages)` is the whole stage. Records are validated with the stream's pydantic
model (the whole list at once; on failure only the failing records are set aside), failures
become `Rejection`s, the rest are deduplicated in the batch (newest version per key wins; on a tie
the first seen, since Stripe lists newest first) and mapped column by column with the declarative
`MAPPINGS` below -- the operator never hard-codes a mapping.

Column conventions of every produced DataFrame: the table's business columns in declared order,
then, for a header whose mapping `stores_children_digest`, `CHILDREN_SHA256` (its child rows'
combined hash, which its `row_sha256` covers too: ADR 0027), then `CONTROL_COLUMNS`. Text columns
are `object` dtype with `None` for NULL; money columns hold `decimal.Decimal` in major units
quantized to the currency's exponent; timestamps are `datetime64[us, UTC]`; `source_version` is
int64.

`row_sha256` covers the row's business columns plus its `source_id` (never `source_system` or
`source_version`, so a re-sent identical record is "unchanged"). An invoice header's hash also
covers its lines' hashes in line order, so a changed, added, removed or re-numbered line changes
the header and the loader rewrites the invoice.

A record the client marked deleted (`Page.deleted_ids`, ADR 0015) arrives with its child lists
emptied; its primary row gets `tombstone_sha256(row_sha256)` and its key is in
`MappedBatch.deleted_ids`, for the loader to stage it `DELETED`.

`map_pages(spec, pages, primary_only=True)` is reconciliation's header-only read: records are
validated with a variant of the model whose child lists are not read (so a truncated `lines` list
is not a rejection), and only the primary table is built, as a `HeaderRows` -- no child rows, no
child hashing, and no `row_sha256` (an invoice header's hash covers lines that were not read). A
`HeaderRows` is not a `MappedBatch`: the loader cannot take it.

Rejection reason codes (one per record, the most specific that applies; the message names every
failing field, up to five): NOT_AN_OBJECT (the record is not a JSON object), MISSING_ID (the
mapping's id field is absent, null or empty), UNKNOWN_CURRENCY (not ISO-4217, or more than 3
decimals), INCOMPLETE_CHILDREN (an embedded list still says `has_more`), INVALID_FIELD (any other
type/constraint failure, e.g. a string or float amount). Page `problems` pass through unchanged.

Status map: Stripe's status strings are kept verbatim (invoice draft/open/paid/uncollectible/void,
charge succeeded/pending/failed, refund pending/requires_action/succeeded/failed/canceled, credit
note issued/void); the orders API's `state` is kept verbatim too. A mapping may declare a
`status_map` on its status column when an ERP needs other codes; unmapped values pass through.
"""

from __future__ import annotations

import functools
import itertools
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Any, Final, Literal, overload

import numpy as np
import pandas as pd
from pydantic import BaseModel, TypeAdapter, ValidationError, create_model
from pydantic_core import ErrorDetails

from erp_sync.core.batch import CHILDREN_SHA256, CONTROL_COLUMNS, MappedBatch, Page, Rejection
from erp_sync.core.batching import gc_paused
from erp_sync.core.hashing import combine_digests, frame_row_sha256, tombstone_sha256
from erp_sync.core.models import resolve
from erp_sync.core.money import CURRENCY_EXPONENTS
from erp_sync.core.shape import model_shape
from erp_sync.streams.spec import StreamSpec

ColumnKind = Literal["text", "currency", "money", "decimal", "unix_time", "datetime", "int", "status"]


@dataclass(frozen=True)
class Column:
    """One target column: where its value comes from on the validated model and how it converts.

    `source` is an attribute path on the model (`"customer"`, `"lines.data"`, a model property
    such as `"invoice_id"`); a tuple of paths takes the first that is not None.
    Kinds: text (as is), currency (ISO upper), money (minor int -> Decimal major by the row's
    currency exponent), decimal (Decimal as is), unix_time (int seconds -> UTC timestamp),
    datetime (aware datetime -> UTC timestamp), int, status (through `status_map`, else verbatim).
    """

    name: str
    source: str | tuple[str, ...]
    kind: ColumnKind = "text"
    status_map: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ChildMapping:
    """Rows embedded in each parent record (invoice lines), in their own table.

    Each child row gets the parent's id in `parent_column`, its 1-based position in
    `position_column`, the parent's values for the `inherit`ed columns, and the parent's version.
    Money is converted with the parent's currency.
    """

    table: str
    items: str
    id_source: str
    parent_column: str
    position_column: str
    columns: tuple[Column, ...]
    inherit: tuple[str, ...] = ()

    @property
    def business_columns(self) -> tuple[str, ...]:
        own = tuple(column.name for column in self.columns)
        return (self.parent_column, self.position_column, *self.inherit, *own)


@dataclass(frozen=True)
class TableMapping:
    """A stream's mapping: one row per record in `table`, plus any child tables."""

    table: str
    id_source: str
    columns: tuple[Column, ...]
    currency_source: str | None = None
    children: tuple[ChildMapping, ...] = ()
    # The primary table stores `CHILDREN_SHA256` (its table needs the column): the loader then
    # looks for removed child rows only under headers whose children changed (ADR 0027).
    stores_children_digest: bool = False

    def __post_init__(self) -> None:
        if self.stores_children_digest and not self.children:
            raise ValueError(f"{self.table}: stores_children_digest needs child tables")

    @property
    def business_columns(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def tables(self) -> tuple[str, ...]:
        return (self.table, *(child.table for child in self.children))

    @property
    def child_fields(self) -> tuple[str, ...]:
        """The top-level model fields that hold the children (`lines` for `lines.data`)."""
        return tuple(child.items.split(".", 1)[0] for child in self.children)


# Control columns of header-only rows: no row_sha256 (see `HeaderRows`).
HEADER_CONTROL_COLUMNS: Final = ("source_system", "source_id", "source_version")


@dataclass
class HeaderRows:
    """`map_pages(..., primary_only=True)`: the primary table's rows, for reconciliation only.

    `rows` has the primary table's business columns plus `HEADER_CONTROL_COLUMNS`, one row per
    accepted record (after in-batch dedupe). There is deliberately no `row_sha256`: an invoice
    header's hash covers its lines' hashes, and the lines were not read, so any hash here would be
    wrong for the staging row. This is not a `MappedBatch` (no `tables`), so it cannot reach the
    loader; reconciliation compares business columns only.
    """

    source_system: str
    stream: str
    primary_table: str
    rows: pd.DataFrame
    rejections: list[Rejection]
    extracted: int  # records in the pages (accepted + superseded + rejected)
    superseded: int

    @property
    def accepted(self) -> int:
        return len(self.rows)


_ISSUED: Final = ("effective_at", "created")

MAPPINGS: Final[dict[str, TableMapping]] = {
    "stripe_customers": TableMapping(
        table="customers",
        id_source="id",
        columns=(
            Column("name", "name"),
            Column("email", "email"),
            Column("currency_code", "currency", "currency"),
            Column("created_at", "created", "unix_time"),
        ),
    ),
    "stripe_invoices": TableMapping(
        table="ar_invoices",
        id_source="id",
        currency_source="currency",
        stores_children_digest=True,
        columns=(
            Column("customer_ref", "customer"),
            Column("invoice_number", "number"),
            Column("status", "status", "status"),
            Column("currency_code", "currency", "currency"),
            Column("subtotal_amount", "subtotal", "money"),
            Column("tax_amount", "tax_total", "money"),
            Column("total_amount", "total", "money"),
            Column("amount_paid", "amount_paid", "money"),
            Column("amount_due", "amount_due", "money"),
            Column("issued_at", _ISSUED, "unix_time"),
            Column("due_at", "due_date", "unix_time"),
        ),
        children=(
            ChildMapping(
                table="ar_invoice_lines",
                items="lines.data",
                id_source="id",
                parent_column="invoice_source_id",
                position_column="line_number",
                inherit=("currency_code",),
                columns=(
                    Column("description", "description"),
                    Column("quantity", ("quantity_decimal", "quantity"), "decimal"),
                    Column("amount", "amount", "money"),
                    # What the line's own discounts took off `amount`: the lines less these add up
                    # to the invoice's subtotal (ADR 0019).
                    Column("discount_amount", "item_discount", "money"),
                ),
            ),
        ),
    ),
    "stripe_charges": TableMapping(
        table="ar_receipts",
        id_source="id",
        currency_source="currency",
        columns=(
            Column("invoice_source_id", "invoice_id"),
            Column("customer_ref", "customer"),
            Column("currency_code", "currency", "currency"),
            Column("amount", "amount", "money"),
            Column("amount_refunded", "amount_refunded", "money"),
            Column("status", "status", "status"),
            Column("received_at", "created", "unix_time"),
        ),
    ),
    "stripe_refunds": TableMapping(
        table="ar_refunds",
        id_source="id",
        currency_source="currency",
        columns=(
            Column("receipt_source_id", "charge"),
            Column("currency_code", "currency", "currency"),
            Column("amount", "amount", "money"),
            Column("status", "status", "status"),
            Column("reason", "reason"),
            Column("refunded_at", "created", "unix_time"),
        ),
    ),
    "stripe_credit_notes": TableMapping(
        table="ar_credit_memos",
        id_source="id",
        currency_source="currency",
        columns=(
            Column("invoice_source_id", "invoice"),
            Column("customer_ref", "customer"),
            Column("memo_number", "number"),
            Column("status", "status", "status"),
            Column("reason", "reason"),
            Column("currency_code", "currency", "currency"),
            Column("total_amount", "total", "money"),
            Column("issued_at", _ISSUED, "unix_time"),
        ),
    ),
    "orders": TableMapping(
        table="sales_orders",
        id_source="order_id",
        currency_source="currency",
        columns=(
            Column("customer_ref", "customer_id"),
            Column("status", "state", "status"),
            Column("currency_code", "currency", "currency"),
            Column("total_amount", "total_cents", "money"),
            Column("ordered_at", "created_at", "datetime"),
        ),
    ),
}

# Reason codes, most specific first: a record with several problems gets the first that applies.
NOT_AN_OBJECT: Final = "NOT_AN_OBJECT"
MISSING_ID: Final = "MISSING_ID"
UNKNOWN_CURRENCY: Final = "UNKNOWN_CURRENCY"
# An embedded child list still says has_more: loading it would load a partial invoice.
INCOMPLETE_CHILDREN: Final = "INCOMPLETE_CHILDREN"
INVALID_FIELD: Final = "INVALID_FIELD"
CURRENCY_NOT_ENABLED: Final = "CURRENCY_NOT_ENABLED"
_REASON_PRIORITY: Final = (
    NOT_AN_OBJECT,
    MISSING_ID,
    UNKNOWN_CURRENCY,
    CURRENCY_NOT_ENABLED,
    INCOMPLETE_CHILDREN,
    INVALID_FIELD,
)
_MAX_MESSAGE_ERRORS: Final = 5

# Scaling by a power of ten in this context can never round.
_EXACT: Final = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


# --- validation ------------------------------------------------------------------------------------


@functools.cache
def _list_adapter(model: type[BaseModel]) -> TypeAdapter[list[BaseModel]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def _reason_for(error: ErrorDetails, primary_key: str) -> str:
    loc = error["loc"]
    if not loc and error["type"] in {"model_type", "dict_type", "model_attributes_type"}:
        return NOT_AN_OBJECT
    if loc == (primary_key,) and (
        error["type"] in {"missing", "string_too_short"} or error.get("input", "") is None
    ):
        return MISSING_ID
    if error["type"] == "unknown_currency":
        return UNKNOWN_CURRENCY
    if error["type"] == "currency_not_enabled":
        return CURRENCY_NOT_ENABLED
    if loc and loc[-1] == "has_more" and error["type"] == "literal_error" and error.get("input") is True:
        return INCOMPLETE_CHILDREN
    return INVALID_FIELD


def _describe(error: ErrorDetails) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "<record>"
    text = f"field {where}: {error['msg']}"
    if error["type"] != "missing" and "input" in error and not isinstance(error["input"], dict | list):
        text += f" (got {error['input']!r:.80})"
    return text


def raw_payload(record: Any) -> str:
    """The record's JSON text for `erp_sync.rejections.raw_payload` (key order kept)."""
    try:
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return repr(record)


def _record_id(record: Any, primary_key: str) -> str | None:
    if isinstance(record, dict):
        value = record.get(primary_key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return None


def _rejection(
    stream: str, id_field: str, record: Any, errors: list[ErrorDetails], payload: Any
) -> Rejection:
    reasons = {_reason_for(error, id_field) for error in errors}
    reason = next(code for code in _REASON_PRIORITY if code in reasons)
    message = "; ".join(_describe(error) for error in errors[:_MAX_MESSAGE_ERRORS])
    if len(errors) > _MAX_MESSAGE_ERRORS:
        message += f"; and {len(errors) - _MAX_MESSAGE_ERRORS} more"
    return Rejection(
        stream=stream,
        reason_code=reason,
        message=message,
        raw_payload=raw_payload(payload),
        source_id=_record_id(record, id_field),
    )


def validate_records(
    stream: str,
    id_field: str,
    model: type[BaseModel],
    records: Sequence[Any],
    payload_of: Callable[[int], Any] | None = None,
) -> tuple[list[int], list[BaseModel], list[Rejection]]:
    """Validate `records`; return (positions of the valid ones, their models, rejections).

    `id_field` is the model's key field (MISSING_ID when it is absent, null or empty).
    `payload_of(position)`: what a rejection keeps as the record's raw payload, when `records` are
    not whole (decoded narrow: only the fields the model reads); by default the record itself.

    Fast path: the whole list in one pydantic call. When it fails, the error locations say which
    records failed; those become rejections and the rest are validated again in one call.
    """
    adapter = _list_adapter(model)
    try:
        return list(range(len(records))), adapter.validate_python(records), []
    except ValidationError as exc:
        errors_by_record: dict[int, list[ErrorDetails]] = {}
        for error in exc.errors(include_url=False):
            position = error["loc"][0]
            if not isinstance(position, int):
                raise TypeError(f"unexpected validation error location {error['loc']!r}") from exc
            errors_by_record.setdefault(position, []).append({**error, "loc": error["loc"][1:]})
    payload = payload_of or records.__getitem__
    rejections = [
        _rejection(stream, id_field, records[i], errors, payload(i))
        for i, errors in sorted(errors_by_record.items())
    ]
    positions = [i for i in range(len(records)) if i not in errors_by_record]
    try:
        models = adapter.validate_python([records[i] for i in positions])
    except ValidationError:  # pragma: no cover - a record valid alone should be valid in a list
        return _validate_one_by_one(stream, id_field, model, records, payload)
    return positions, models, rejections


def _validate_one_by_one(
    stream: str,
    id_field: str,
    model: type[BaseModel],
    records: Sequence[Any],
    payload_of: Callable[[int], Any],
) -> tuple[list[int], list[BaseModel], list[Rejection]]:
    positions: list[int] = []
    models: list[BaseModel] = []
    rejections: list[Rejection] = []
    for position, record in enumerate(records):
        try:
            models.append(model.model_validate(record))
            positions.append(position)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            rejections.append(_rejection(stream, id_field, record, errors, payload_of(position)))
    return positions, models, rejections


# --- dedupe --------------------------------------------------------------------------------------


def newest_per_key(ids: Sequence[str], versions: Sequence[int]) -> list[int]:
    """Positions to keep: per id the highest version, on a tie the first seen; in input order."""
    if len(set(ids)) == len(ids):
        return list(range(len(ids)))
    frame = pd.DataFrame({"id": ids, "version": np.asarray(versions, dtype=np.int64)})
    newest_first = frame.sort_values("version", ascending=False, kind="stable")
    kept = newest_first.drop_duplicates("id", keep="first").index
    return sorted(int(position) for position in kept)


# --- mapping -------------------------------------------------------------------------------------


def _paths(source: str | tuple[str, ...]) -> tuple[str, ...]:
    return (source,) if isinstance(source, str) else source


def _source_values(objs: Sequence[Any], sources: Sequence[str | tuple[str, ...]]) -> list[list[Any]]:
    """Per source, its values over `objs` (all of one model class).

    Plain model fields are read for every source in one pass over the models' `__dict__`s (one
    C-level itemgetter per object); dotted paths and properties fall back to `attrgetter`.
    """
    if not objs:
        return [[] for _ in sources]
    first = objs[0]
    fields = type(first).model_fields if isinstance(first, BaseModel) else {}
    plain = sorted({path for source in sources for path in _paths(source) if path in fields})
    by_path: dict[str, list[Any]] = {}
    if len(plain) == 1:
        by_path[plain[0]] = [obj.__dict__[plain[0]] for obj in objs]
    elif plain:
        get = operator.itemgetter(*plain)
        rows = [get(obj.__dict__) for obj in objs]
        by_path.update(zip(plain, map(list, zip(*rows, strict=True)), strict=True))

    def values_at(path: str) -> list[Any]:
        if path not in by_path:
            by_path[path] = list(map(operator.attrgetter(path), objs))
        return by_path[path]

    out = []
    for source in sources:
        paths = _paths(source)
        values = values_at(paths[0])
        for path in paths[1:]:  # coalesce: first not None
            values = [a if a is not None else b for a, b in zip(values, values_at(path), strict=True)]
        out.append(values)
    return out


def _exponents(currencies: Sequence[str | None]) -> list[int]:
    lookup = {code: CURRENCY_EXPONENTS[code.upper()] for code in set(currencies) if code is not None}
    return [0 if code is None else lookup[code] for code in currencies]


def _money(values: list[Any], exponents: Sequence[int]) -> list[Decimal | None]:
    scale = _EXACT.scaleb  # exact: minor int x 10^-exponent, quantized to the exponent
    negated = [-exp for exp in exponents]
    if None not in values:
        return list(map(scale, values, negated))
    return [None if minor is None else scale(minor, exp) for minor, exp in zip(values, negated, strict=True)]


def _convert(column: Column, values: list[Any], exponents: Sequence[int] | None) -> Any:
    """A column's values converted for its kind: a list (object column) or a typed array/Series."""
    kind = column.kind
    if kind == "money":
        if exponents is None:
            raise ValueError(f"money column {column.name!r} needs the mapping's currency_source")
        return _money(values, exponents)
    if kind == "unix_time":
        seconds = pd.array(values, dtype="Int64")
        return pd.to_datetime(seconds, unit="s", utc=True).astype("datetime64[us, UTC]")
    if kind == "datetime":
        return pd.to_datetime(values, utc=True).astype("datetime64[us, UTC]")
    if kind == "int":
        return pd.array(values, dtype="Int64")
    if kind == "decimal":  # ints and decimal strings (Stripe's *_decimal fields) -> Decimal
        return [None if value is None else Decimal(value) for value in values]
    if kind == "currency":
        upper = {code: code.upper() for code in set(values) if code is not None}
        return [None if code is None else upper[code] for code in values]
    if kind == "status" and column.status_map:
        status_map = column.status_map
        return [status_map.get(value, value) for value in values]
    return values


def _map_columns(
    objs: Sequence[Any], columns: Sequence[Column], exponents: Sequence[int] | None
) -> dict[str, Any]:
    values = _source_values(objs, [column.source for column in columns])
    return {
        column.name: _convert(column, column_values, exponents)
        for column, column_values in zip(columns, values, strict=True)
    }


def _object_array(values: Any) -> Any:
    """A 1-D object ndarray of `values` (None stays None; no string inference)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _series(values: Any) -> pd.Series:
    """Lists and object arrays become `object` Series (pandas 3 would infer `str` and turn None
    into NaN); typed arrays (timestamps, ints) keep their dtype."""
    if isinstance(values, list) or (isinstance(values, np.ndarray) and values.dtype == object):
        return pd.Series(values, dtype=object)
    return pd.Series(values)


def _frame_data(
    business: dict[str, Any], source_system: str, ids: Sequence[str], versions: Any
) -> dict[str, pd.Series]:
    """Business columns + source_system, source_id, source_version as Series."""
    count = len(ids)
    data = {name: _series(values) for name, values in business.items()}
    data["source_system"] = _series([source_system] * count)
    data["source_id"] = _series(list(ids))
    data["source_version"] = pd.Series(np.asarray(versions, dtype=np.int64))
    return data


def _frame(
    business: dict[str, Any],
    source_system: str,
    ids: Sequence[str],
    versions: Any,
    child_digests: dict[str, list[str]] | None = None,
) -> pd.DataFrame:
    """Business columns + CONTROL_COLUMNS, with `row_sha256` over business + source_id
    (+ the child digests, which are hashed but not stored)."""
    count = len(ids)
    data = _frame_data(business, source_system, ids, versions)
    for name, digests in (child_digests or {}).items():
        data[name] = _series(digests)
    frame = pd.DataFrame(data, index=pd.RangeIndex(count))
    hashed = [*business, "source_id", *(child_digests or {})]
    frame["row_sha256"] = frame_row_sha256(frame, hashed)
    return frame[[*business, *CONTROL_COLUMNS]]


def _map_children(
    child: ChildMapping,
    parents: Sequence[Any],
    parent_business: dict[str, Any],
    parent_ids: Sequence[str],
    parent_versions: Sequence[int],
    parent_exponents: Sequence[int] | None,
    source_system: str,
) -> tuple[pd.DataFrame, list[int]]:
    """The child table's frame and the number of children of each parent (rows are in parent order)."""
    [lists] = _source_values(parents, [child.items])
    counts = [len(items) for items in lists]
    items = list(itertools.chain.from_iterable(lists))
    owner = np.repeat(np.arange(len(parents)), counts)
    starts = np.cumsum(counts) - np.asarray(counts, dtype=np.int64)
    positions = np.arange(len(items), dtype=np.int64) - np.repeat(starts, counts) + 1
    exponents = None if parent_exponents is None else np.asarray(parent_exponents)[owner].tolist()
    business: dict[str, Any] = {
        child.parent_column: _object_array(parent_ids)[owner],
        child.position_column: positions,
    }
    for name in child.inherit:
        business[name] = _object_array(parent_business[name])[owner]
    business.update(_map_columns(items, child.columns, exponents))
    [ids] = _source_values(items, [child.id_source])
    frame = _frame(business, source_system, ids, np.asarray(parent_versions, dtype=np.int64)[owner])
    return frame, counts


def _primary_columns(
    mapping: TableMapping, models: Sequence[Any]
) -> tuple[list[Any], list[int] | None, dict[str, Any]]:
    """The records' ids, their currencies' exponents (None without a currency) and the primary
    table's business columns."""
    [ids] = _source_values(models, [mapping.id_source])
    exponents = None
    if mapping.currency_source is not None:
        [currencies] = _source_values(models, [mapping.currency_source])
        exponents = _exponents(currencies)
    return ids, exponents, _map_columns(models, mapping.columns, exponents)


def map_models(
    mapping: TableMapping,
    source_system: str,
    models: Sequence[Any],
    versions: Sequence[int],
) -> dict[str, pd.DataFrame]:
    """Map validated, deduplicated models to one DataFrame per table of `mapping`."""
    ids, exponents, business = _primary_columns(mapping, models)
    tables: dict[str, pd.DataFrame] = {}
    child_digests: dict[str, list[str]] = {}
    for child in mapping.children:
        frame, counts = _map_children(child, models, business, ids, versions, exponents, source_system)
        tables[child.table] = frame
        digests = frame["row_sha256"].tolist()
        ends = itertools.accumulate(counts)
        # Hashed with the header, not stored: a changed line changes the header's row_sha256.
        child_digests[f"{child.table}__sha256"] = [
            combine_digests(digests[end - count : end]) for end, count in zip(ends, counts, strict=True)
        ]
    primary = _frame(business, source_system, ids, versions, child_digests)
    if mapping.stores_children_digest:
        primary.insert(len(business), CHILDREN_SHA256, _children_digest(list(child_digests.values())))
    tables[mapping.table] = primary
    return {table: tables[table] for table in mapping.tables}


def _children_digest(per_child_table: list[list[str]]) -> list[str]:
    """Per record, one digest of its child rows: a single child table's own combined digest (already
    computed for the row hash), several combined in mapping order."""
    if len(per_child_table) == 1:
        return per_child_table[0]
    return [combine_digests(list(digests)) for digests in zip(*per_child_table, strict=True)]


def map_headers(
    mapping: TableMapping, source_system: str, models: Sequence[Any], versions: Sequence[int]
) -> pd.DataFrame:
    """The primary table only: business columns + `HEADER_CONTROL_COLUMNS`, no hash, no children."""
    ids, _, business = _primary_columns(mapping, models)
    data = _frame_data(business, source_system, ids, versions)
    return pd.DataFrame(data, index=pd.RangeIndex(len(ids)))[[*business, *HEADER_CONTROL_COLUMNS]]


@functools.cache
def header_model(model: type[BaseModel], child_fields: tuple[str, ...]) -> type[BaseModel]:
    """`model` with its child-list fields not read: any value (or none) is accepted and ignored.

    A subclass, so the header fields, validators and properties are exactly the model's own.
    """
    if not child_fields:
        return model
    unknown = [name for name in child_fields if name not in model.model_fields]
    if unknown:
        raise ValueError(f"model {model.__name__} has no child fields {unknown}")
    overrides: dict[str, Any] = {name: (Any, None) for name in child_fields}
    return create_model(f"{model.__name__}Header", __base__=model, **overrides)


def header_source_fields(spec: StreamSpec) -> frozenset[str] | None:
    """The top-level record fields `map_pages(..., primary_only=True)` reads: the model's fields (by
    their JSON names, `model_shape`), not its child lists. None when the record must be decoded
    whole (an alias path, extra fields kept, a validator that sees the raw input)."""
    shape = model_shape(resolve(spec.model))
    if shape is None:
        return None
    return shape.field_names() - frozenset(MAPPINGS[spec.mapping].child_fields)


def _check_spec(spec: StreamSpec, mapping: TableMapping) -> None:
    if spec.target_tables and set(spec.target_tables) != set(mapping.tables):
        raise ValueError(
            f"stream {spec.name!r}: target_tables {spec.target_tables} do not match mapping "
            f"{spec.mapping!r} tables {mapping.tables}"
        )


@overload
def map_pages(
    spec: StreamSpec,
    pages: Sequence[Page],
    *,
    primary_only: Literal[False] = False,
) -> MappedBatch: ...


@overload
def map_pages(
    spec: StreamSpec,
    pages: Sequence[Page],
    *,
    primary_only: Literal[True],
) -> HeaderRows: ...


def map_pages(
    spec: StreamSpec,
    pages: Sequence[Page],
    *,
    primary_only: bool = False,
) -> MappedBatch | HeaderRows:
    """Validate, dedupe and map a batch of pages of one stream (see the module docstring).

    `primary_only=True` is for reconciliation: a `HeaderRows` (primary table only, child lists not
    validated or mapped, no `row_sha256`); never for loading.

    The older snapshots of an event listing are already out of the pages (`Page.superseded`, the
    client's `drop_superseded`); they are counted here with the in-batch copies `newest_per_key`
    drops.
    """
    with gc_paused():
        if primary_only:
            return _map_headers(spec, pages)
        return _map_pages(spec, pages)


@dataclass
class _Validated:
    mapping: TableMapping
    models: list[Any]
    versions: list[int]
    rejections: list[Rejection]
    superseded: int
    deleted_ids: frozenset[str] = frozenset()  # kept records whose snapshot is a deletion


def _validate_pages(spec: StreamSpec, pages: Sequence[Page], model: type[BaseModel]) -> _Validated:
    """Collect the pages' records, validate them with `model` and keep the newest per key."""
    mapping = MAPPINGS[spec.mapping]
    records: list[Any] = []
    versions: list[int] = []
    rejections: list[Rejection] = []
    dropped = 0
    deleted: set[str] = set()
    for page in pages:
        page_records = page.decode_records()
        if len(page.versions) != len(page_records):
            raise ValueError(
                f"page {page.page_no} of {page.stream}: {len(page_records)} records "
                f"but {len(page.versions)} versions"
            )
        records.extend(page_records)
        versions.extend(page.versions)
        rejections.extend(page.problems)
        dropped += page.superseded
        deleted.update(page.deleted_ids)
    positions, models, invalid = validate_records(
        spec.name, mapping.id_source, model, records, _whole_payloads(pages)
    )
    rejections.extend(invalid)
    if deleted:  # a quarantined deletion must stay one when it is replayed
        rejections = [replace(r, deleted=True) if r.source_id in deleted else r for r in rejections]
    valid_versions = [versions[i] for i in positions]
    get_id = operator.attrgetter(mapping.id_source)
    keep = newest_per_key([get_id(m) for m in models], valid_versions)
    superseded = len(models) - len(keep) + dropped
    if len(keep) < len(models):
        models = [models[i] for i in keep]
        valid_versions = [valid_versions[i] for i in keep]
    # Keys are unique per window in an event listing (the client drops older snapshots), so a key
    # marked deleted on any page is the kept record's own deletion.
    gone = frozenset(deleted.intersection(str(get_id(m)) for m in models)) if deleted else frozenset()
    return _Validated(mapping, models, valid_versions, rejections, superseded, gone)


def _whole_payloads(pages: Sequence[Page]) -> Callable[[int], Any]:
    """The whole record behind a position of the pages' records, all pages in turn
    (`Page.whole_record`)."""

    def payload_of(position: int) -> Any:
        for page in pages:
            if position < len(page.records):
                return page.whole_record(position)
            position -= len(page.records)
        raise IndexError(position)

    return payload_of


def _map_pages(spec: StreamSpec, pages: Sequence[Page]) -> MappedBatch:
    mapping = MAPPINGS[spec.mapping]
    _check_spec(spec, mapping)
    valid = _validate_pages(spec, pages, resolve(spec.model))
    tables = map_models(mapping, spec.source_system, valid.models, valid.versions)
    if valid.deleted_ids:
        _mark_tombstones(tables[mapping.table], valid.deleted_ids)
    return MappedBatch(
        source_system=spec.source_system,
        stream=spec.name,
        primary_table=mapping.table,
        tables=tables,
        rejections=valid.rejections,
        extracted=sum(page.extracted for page in pages),
        superseded=valid.superseded,
        deleted_ids=valid.deleted_ids,
    )


def _mark_tombstones(primary: pd.DataFrame, deleted_ids: frozenset[str]) -> None:
    """Give deleted records' primary rows their tombstone hash (their child lists are already empty)."""
    gone = primary["source_id"].astype(str).isin(deleted_ids)
    primary.loc[gone, "row_sha256"] = [tombstone_sha256(sha) for sha in primary.loc[gone, "row_sha256"]]


def _map_headers(spec: StreamSpec, pages: Sequence[Page]) -> HeaderRows:
    mapping = MAPPINGS[spec.mapping]
    _check_spec(spec, mapping)
    model = header_model(resolve(spec.model), mapping.child_fields)
    valid = _validate_pages(spec, pages, model)
    return HeaderRows(
        source_system=spec.source_system,
        stream=spec.name,
        primary_table=mapping.table,
        rows=map_headers(mapping, spec.source_system, valid.models, valid.versions),
        rejections=valid.rejections,
        extracted=sum(page.extracted for page in pages),
        superseded=valid.superseded,
    )
