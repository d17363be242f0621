"""Money conversion: every exponent, exactness, precision errors, and refusal of floats/bools."""

from __future__ import annotations

from decimal import Decimal

import pytest

from erp_sync.core.money import (
    CURRENCY_EXPONENTS,
    SubMinorPrecisionError,
    UnknownCurrencyError,
    exponent,
    normalise_currency,
    quantum,
    to_major,
    to_minor,
)


@pytest.mark.parametrize(
    ("currency", "expected"),
    [
        ("JPY", 0), ("KRW", 0), ("VND", 0), ("CLP", 0), ("ISK", 0), ("XOF", 0),
        ("USD", 2), ("EUR", 2), ("GBP", 2), ("CHF", 2),
        ("KWD", 3), ("BHD", 3), ("JOD", 3), ("OMR", 3), ("TND", 3), ("IQD", 3), ("LYD", 3),
        ("CLF", 4), ("UYW", 4),
    ],
)  # fmt: skip
def test_exponent_per_iso_4217(currency: str, expected: int) -> None:
    assert exponent(currency) == expected
    assert exponent(currency.lower()) == expected


def test_every_known_currency_has_a_three_letter_upper_code() -> None:
    assert all(len(code) == 3 and code.isalpha() and code.isupper() for code in CURRENCY_EXPONENTS)
    assert set(CURRENCY_EXPONENTS.values()) == {0, 2, 3, 4}


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (1050, "jpy", "1050"),
        (1050, "usd", "10.50"),
        (1050, "kwd", "1.050"),
        (1050, "CLF", "0.1050"),
        (0, "usd", "0.00"),
        (0, "JPY", "0"),
        (0, "KWD", "0.000"),
        (1, "usd", "0.01"),
        (1, "kwd", "0.001"),
        (-1999, "usd", "-19.99"),
        (-5, "KWD", "-0.005"),
        (99_999_999_999_999_999, "JPY", "99999999999999999"),
        (10**40 + 1, "usd", "100000000000000000000000000000000000000.01"),
    ],
)
def test_to_major_is_exact_and_quantized_to_the_exponent(minor: int, currency: str, text: str) -> None:
    major = to_major(minor, currency)
    assert isinstance(major, Decimal)
    assert str(major) == text
    assert major.as_tuple().exponent == -exponent(currency)


@pytest.mark.parametrize(
    ("major", "currency", "minor"),
    [
        (Decimal("10.50"), "USD", 1050),
        (Decimal("10.5"), "USD", 1050),
        (Decimal("10.500000"), "usd", 1050),  # trailing zeros are not precision
        (Decimal("1E+3"), "JPY", 1000),
        (Decimal("1050"), "JPY", 1050),
        (Decimal("1.234"), "KWD", 1234),
        (Decimal("-0.005"), "KWD", -5),
        (Decimal("0.1050"), "CLF", 1050),
        (Decimal("-19.99"), "usd", -1999),
        (Decimal("0"), "usd", 0),
        (Decimal("-0.00"), "usd", 0),
        (12, "USD", 1200),
        (12, "JPY", 12),
        (12, "KWD", 12000),
    ],
)
def test_to_minor(major: Decimal | int, currency: str, minor: int) -> None:
    assert to_minor(major, currency) == minor


@pytest.mark.parametrize(
    ("major", "currency"),
    [
        (Decimal("10.005"), "USD"),
        (Decimal("0.001"), "EUR"),
        (Decimal("100.5"), "JPY"),
        (Decimal("0.1"), "KRW"),
        (Decimal("1.2345"), "KWD"),
        (Decimal("-0.0001"), "BHD"),
    ],
)
def test_to_minor_refuses_precision_below_the_minor_unit(major: Decimal, currency: str) -> None:
    with pytest.raises(SubMinorPrecisionError):
        to_minor(major, currency)


@pytest.mark.parametrize("currency", ["JPY", "USD", "KWD", "CLF"])
def test_round_trip_minor_major_minor(currency: str) -> None:
    for minor in [*range(-1100, 1100, 7), 10**17 - 1, -(10**17) + 1]:
        assert to_minor(to_major(minor, currency), currency) == minor


@pytest.mark.parametrize("bad", [10.5, 10.0, True, False, "1050", None, Decimal("10.50")])
def test_to_major_accepts_only_int_minor_amounts(bad: object) -> None:
    with pytest.raises(TypeError):
        to_major(bad, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [10.5, 10.0, True, "10.50", None])
def test_to_minor_refuses_floats_bools_and_strings(bad: object) -> None:
    with pytest.raises(TypeError):
        to_minor(bad, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_to_minor_refuses_non_finite(bad: Decimal) -> None:
    with pytest.raises(ValueError, match="finite"):
        to_minor(bad, "USD")


@pytest.mark.parametrize("code", ["XYZ", "US", "USDD", "", "us d", "ZZZ"])
def test_unknown_currency_is_refused_everywhere(code: str) -> None:
    with pytest.raises(UnknownCurrencyError):
        to_major(100, code)
    with pytest.raises(UnknownCurrencyError):
        to_minor(Decimal("1.00"), code)
    with pytest.raises(UnknownCurrencyError):
        exponent(code)


def test_non_string_currency_is_unknown() -> None:
    with pytest.raises(UnknownCurrencyError):
        normalise_currency(None)
    with pytest.raises(UnknownCurrencyError):
        normalise_currency(840)


def test_normalise_and_quantum() -> None:
    assert normalise_currency("usd") == "USD"
    assert quantum("usd") == Decimal("0.01")
    assert quantum("JPY") == Decimal("1")
    assert str(quantum("kwd")) == "0.001"


def test_accepted_currencies_setting(monkeypatch) -> None:
    from erp_sync.core.money import ACCEPTED_CURRENCIES_ENV, accepted_currencies

    monkeypatch.delenv(ACCEPTED_CURRENCIES_ENV, raising=False)
    assert accepted_currencies() is None
    monkeypatch.setenv(ACCEPTED_CURRENCIES_ENV, "usd, EUR,,jpy")
    assert accepted_currencies() == frozenset({"USD", "EUR", "JPY"})
