"""Money: integer minor units <-> exact `Decimal` major units, by each currency's ISO-4217 exponent.

SaaS APIs (Stripe first) send amounts as integers in the currency's minor unit (cents for USD,
yen for JPY, fils for KWD). The ERP wants major units as NUMERIC. The conversion is exact decimal
scaling -- never float -- and an amount that cannot be represented in minor units is an error, not
something to round silently.
"""

from __future__ import annotations

import functools
import os
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Final


class UnknownCurrencyError(ValueError):
    """The currency code is not an active ISO-4217 code we know the exponent of."""


class SubMinorPrecisionError(ValueError):
    """A major-unit amount has more decimal places than the currency's minor unit allows."""


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Active ISO-4217 codes whose minor unit is not 2 decimal places.
_EXPONENT_0: Final = _codes("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF")
_EXPONENT_3: Final = _codes("BHD IQD JOD KWD LYD OMR TND")
_EXPONENT_4: Final = _codes("CLF UYW")
# Active ISO-4217 codes with exponent 2 (including the fund/precious-metal-free codes in use).
_EXPONENT_2: Final = _codes(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN
    BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP
    GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK
    LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK
    NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD
    SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG
    YER ZAR ZMW ZWG ZWL
    """
)

CURRENCY_EXPONENTS: Final[dict[str, int]] = {
    **{code: 2 for code in _EXPONENT_2},
    **{code: 0 for code in _EXPONENT_0},
    **{code: 3 for code in _EXPONENT_3},
    **{code: 4 for code in _EXPONENT_4},
}


# A context that can never round: scaling by a power of ten is then exact for any int.
_EXACT: Final = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


def normalise_currency(code: object) -> str:
    """Return the upper-case ISO code (`"usd"` -> `"USD"`); raise `UnknownCurrencyError` otherwise."""
    if not isinstance(code, str):
        raise UnknownCurrencyError(f"currency code must be a string, got {type(code).__name__}")
    upper = code.upper()
    if upper not in CURRENCY_EXPONENTS:
        raise UnknownCurrencyError(f"unknown currency code {code!r}")
    return upper


ACCEPTED_CURRENCIES_ENV = "ERP_SYNC_ACCEPTED_CURRENCIES"


@functools.cache
def _parse_accepted(raw: str) -> frozenset[str]:
    return frozenset(code.strip().upper() for code in raw.split(",") if code.strip())


def accepted_currencies() -> frozenset[str] | None:
    """The currencies the ERP has enabled, from `ERP_SYNC_ACCEPTED_CURRENCIES` (comma-separated ISO
    codes; unset or empty: every known currency). Records in another currency are quarantined
    (CURRENCY_NOT_ENABLED) until the ERP enables it and the rejections are replayed."""
    raw = os.environ.get(ACCEPTED_CURRENCIES_ENV, "")
    return _parse_accepted(raw) if raw.strip() else None


def exponent(currency: str) -> int:
    """Decimal places of the currency's minor unit (JPY 0, USD 2, KWD 3)."""
    return CURRENCY_EXPONENTS[normalise_currency(currency)]


def quantum(currency: str) -> Decimal:
    """The smallest major-unit step of the currency: `Decimal("0.01")` for USD, `Decimal("1")` for JPY."""
    return Decimal((0, (1,), -exponent(currency)))


def _require_int(value: object, what: str) -> int:
    # bool is an int subclass: True is not one cent.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    return value


def minor_to_major(minor: int, exp: int) -> Decimal:
    """Exact major amount with exactly `exp` decimal places; the hot-path core of `to_major`.

    `scaleb` only moves the exponent; the unlimited-precision context guarantees it never rounds.
    """
    return Decimal(minor).scaleb(-exp, _EXACT)


def to_major(minor: int, currency: str) -> Decimal:
    """Minor units -> exact `Decimal` major units quantized to the currency's exponent.

    `to_major(1050, "usd") == Decimal("10.50")`, `to_major(1050, "JPY") == Decimal("1050")`,
    `to_major(1050, "KWD") == Decimal("1.050")`.
    """
    return minor_to_major(_require_int(minor, "minor amount"), exponent(currency))


def to_minor(major: Decimal | int, currency: str) -> int:
    """Major units -> integer minor units. Raises `SubMinorPrecisionError` when the amount has
    precision below the minor unit (`Decimal("10.005")` USD); trailing zeros are fine
    (`Decimal("10.500")` USD is 1050). Floats and bools are refused: they are not money.
    """
    exp = exponent(currency)
    if isinstance(major, bool) or not isinstance(major, Decimal | int):
        raise TypeError(f"major amount must be a Decimal or int, got {type(major).__name__}")
    scale: int = 10**exp
    if isinstance(major, int):
        return major * scale
    if not major.is_finite():
        raise ValueError(f"major amount must be finite, got {major}")
    sign, digits, dexp = major.as_tuple()
    if not isinstance(dexp, int):  # finite, checked above
        raise ValueError(f"{major!r} is not a finite amount")
    shift = dexp + exp
    coefficient = int("".join(map(str, digits)) or "0")
    value: int
    if shift >= 0:
        multiplier: int = 10**shift
        value = coefficient * multiplier
    else:
        divisor: int = 10**-shift
        value, remainder = divmod(coefficient, divisor)
        if remainder:
            raise SubMinorPrecisionError(
                f"{major} {currency.upper()} has precision below the minor unit (exponent {exp})"
            )
    return -value if sign else value
