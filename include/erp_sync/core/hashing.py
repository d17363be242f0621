"""Canonical hashing of mapped rows: the `row_sha256` the ledger and the upsert compare.

The hash must be the same for the same business content in every run, process and pandas version,
so it is computed over an explicit, versioned text encoding -- never over `repr`, pickles or
pandas' own hashing. Encoding (format `rowhash/v1`), keys sorted, each field written as
`K<len>:<key>` followed by its typed value:

| value | text |
| --- | --- |
| None, NaN, NaT, NA | `N` |
| bool | `B1` / `B0` |
| int | `I<decimal digits>;` |
| Decimal | `D<fixed-point text at the value's own exponent>;` (`Decimal("10.50")` -> `D10.50;`, -0 -> 0) |
| datetime (tz-aware) | `T<YYYY-MM-DDTHH:MM:SS.ffffff>Z;` in UTC |
| str | `S<len>:<text>` |

Floats and naive datetimes are refused (money is never float; an instant needs an offset).
Mapped money is quantized to its currency's exponent before hashing, so equal amounts of one
currency always carry the same exponent.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import numpy as np
import pandas as pd

from erp_sync.core.timeutil import utc_iso

HASH_FORMAT: Final = "rowhash/v1"


def _encode_none(_: Any) -> str:
    return "N"


def _encode_bool(value: Any) -> str:
    return "B1" if value else "B0"


def _encode_int(value: Any) -> str:
    return f"I{int(value)};"


def _encode_str(value: Any) -> str:
    return f"S{len(value)}:{value}"


def _encode_decimal(value: Any) -> str:
    text = str(value)  # plain notation for the usual exponents; fixed-point below when not
    if "E" in text or "N" in text or "n" in text or text[0] == "-":
        if not value.is_finite():
            raise ValueError(f"cannot hash non-finite Decimal {value}")
        if value.is_zero():
            value = value.copy_abs()
        text = f"{value:f}"
    return f"D{text};"


def _encode_datetime(value: Any) -> str:
    if value is pd.NaT:
        return "N"
    return f"T{utc_iso(value)[:-1]}Z;"


def _encode_float(value: Any) -> str:
    # Missing values in pandas columns arrive as float NaN; any other float is a bug upstream.
    if math.isnan(value):
        return "N"
    raise TypeError(f"refusing to hash float {value!r}: use Decimal or int")


_ENCODERS: Final[dict[type, Callable[[Any], str]]] = {
    type(None): _encode_none,
    bool: _encode_bool,
    np.bool_: _encode_bool,
    int: _encode_int,
    str: _encode_str,
    Decimal: _encode_decimal,
    datetime: _encode_datetime,
    pd.Timestamp: _encode_datetime,
    float: _encode_float,
    np.float64: _encode_float,
    type(pd.NaT): _encode_none,
    type(pd.NA): _encode_none,
}


_STR_OR_NONE: Final = frozenset({str, type(None)})
_DECIMAL_OR_NONE: Final = frozenset({Decimal, type(None)})


def encode_value(value: Any) -> str:
    """The canonical text of one field value (see the module docstring)."""
    encoder = _ENCODERS.get(type(value))
    if encoder is not None:
        return encoder(value)
    # Subclasses and numpy scalars: resolved once by isinstance, in the same precedence.
    if isinstance(value, bool | np.bool_):
        return _encode_bool(value)
    if isinstance(value, int | np.integer):
        return _encode_int(value)
    if isinstance(value, str):
        return _encode_str(value)
    if isinstance(value, Decimal):
        return _encode_decimal(value)
    if isinstance(value, datetime):
        return _encode_datetime(value)
    if isinstance(value, float | np.floating):
        return _encode_float(float(value))
    raise TypeError(f"cannot hash a value of type {type(value).__name__}")


def _key_prefix(key: str) -> str:
    return f"K{len(key)}:{key}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def row_sha256(row: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical encoding of a mapping of business fields."""
    parts = [HASH_FORMAT]
    for key in sorted(row):
        parts.append(_key_prefix(key))
        parts.append(encode_value(row[key]))
    return _digest("".join(parts))


def _encode_column(series: pd.Series, prefix: str) -> list[str]:
    """`prefix` + the encoding of each value of one column; vectorised for datetime/int dtypes."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        utc = series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[us]")
        texts = np.datetime_as_string(utc, unit="us").tolist()
        return [f"{prefix}N" if text == "NaT" else f"{prefix}T{text}Z;" for text in texts]
    if pd.api.types.is_datetime64_dtype(dtype):
        raise TypeError(f"column {series.name!r} holds naive datetimes")
    if pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        values = series.astype(object).tolist()
        return [f"{prefix}N" if value is pd.NA else f"{prefix}I{value};" for value in values]
    values = series.tolist()
    kinds = set(map(type, values))
    if kinds <= _STR_OR_NONE:
        return [f"{prefix}N" if value is None else f"{prefix}S{len(value)}:{value}" for value in values]
    if kinds <= _DECIMAL_OR_NONE:
        texts = ["" if value is None else str(value) for value in values]
        joined = "|".join(texts)
        # str() is the canonical text unless some value is scientific, non-finite or -0.
        if "E" not in joined and "N" not in joined and "I" not in joined and "-0" not in joined:
            return [f"{prefix}D{text};" if text else f"{prefix}N" for text in texts]
        return [f"{prefix}N" if value is None else prefix + _encode_decimal(value) for value in values]
    return [prefix + encode_value(value) for value in values]


def frame_row_sha256(frame: pd.DataFrame, columns: Iterable[str]) -> pd.Series:
    """`row_sha256` of every row over `columns`, column-at-a-time; equal to the per-row function."""
    encoded = [_encode_column(frame[key], _key_prefix(key)) for key in sorted(columns)]
    if encoded:
        rows = [HASH_FORMAT + "".join(parts) for parts in zip(*encoded, strict=True)]
    else:
        rows = [HASH_FORMAT] * len(frame)
    return pd.Series([_digest(row) for row in rows], index=frame.index, dtype=object, name="row_sha256")


def combine_digests(digests: Sequence[str]) -> str:
    """One digest for an ordered list of digests (an invoice's lines, in line order)."""
    return _digest("\n".join(digests))


def tombstone_sha256(row_sha256: str) -> str:
    """The row_sha256 of a record staged as deleted: never equal to a live snapshot's, so the ledger
    and the upsert see the deletion as a change, and a re-read deletion as unchanged."""
    return _digest(f"deleted\n{row_sha256}")


def key_digest(source_system: str, source_id: str) -> str:
    """The ledger key part for a record: the first 32 hex digits of SHA-256(`system|id`).

    Ledger keys carry no customer data in clear.
    """
    return _digest(f"{source_system}|{source_id}")[:32]


def frame_key_digest(source_system: str, source_ids: Iterable[str]) -> list[str]:
    """`key_digest` for many ids at once."""
    return [_digest(f"{source_system}|{source_id}")[:32] for source_id in source_ids]
