from __future__ import annotations

from datetime import UTC, datetime

import pytest

from erp_sync.core.params import InvalidParamError, parse_sync_params

KNOWN = ["customers", "invoices", "charges"]


def test_defaults_select_every_stream() -> None:
    parsed = parse_sync_params({}, KNOWN, KNOWN)
    assert parsed.streams == KNOWN
    assert not parsed.full_refresh and not parsed.dry_run
    assert parsed.window_start is None and parsed.window_end is None


def test_window_is_parsed_as_aware_utc() -> None:
    parsed = parse_sync_params(
        {"window_start": "2026-11-01T00:00:00Z", "window_end": "2026-11-02T00:00:00+00:00"}, KNOWN, KNOWN
    )
    assert parsed.window_start == datetime(2026, 11, 1, tzinfo=UTC)
    assert parsed.window_end == datetime(2026, 11, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("conf", "name", "fragment"),
    [
        ({"streams": ["invoices", "payouts"]}, "streams", "unknown stream"),
        ({"streams": "invoices"}, None, None),
        (
            {"window_start": "2026-11-02T00:00:00Z", "window_end": "2026-11-01T00:00:00Z"},
            "window_end",
            "not after",
        ),
        ({"window_start": "2026-11-01T00:00:00"}, "window_start", "no timezone"),
        ({"window_start": "yesterday"}, "window_start", "not an ISO-8601"),
        ({"dry_run": "yes"}, "dry_run", "true or false"),
        ({"full_refesh": True}, "full_refesh", "not a parameter"),
    ],
)
def test_bad_parameters_name_themselves(conf, name, fragment) -> None:
    if name is None:
        assert parse_sync_params(conf, KNOWN, KNOWN).streams == ["invoices"]
        return
    with pytest.raises(InvalidParamError) as err:
        parse_sync_params(conf, KNOWN, KNOWN)
    assert err.value.name == name
    assert fragment in str(err.value)
