"""Fault settings: validated, settable at start (`--faults JSON`) and at run time (`/_admin/faults`)."""

from __future__ import annotations

from typing import Any

RECORD_KINDS = ("missing_id", "string_amount", "unknown_currency")
BODY_KINDS = ("truncated", "non_json", "html")
MALFORMED_KINDS = (*RECORD_KINDS, *BODY_KINDS, "cycle")

# name -> (type, minimum, default)
FAULT_FIELDS: dict[str, tuple[type, int, Any]] = {
    "http_429_every": (int, 0, 0),  # every Nth API request answers 429 with Retry-After
    "retry_after_s": (int, 0, 1),
    "http_503_every": (int, 0, 0),  # every Nth API request answers 503
    "slow_ms": (int, 0, 0),  # every API response is delayed this long (without blocking others)
    "malformed_every": (int, 0, 0),  # one record per N (or one list body per N for body kinds)
    "malformed_kind": (str, 0, "missing_id"),
    "duplicate_across_pages": (int, 0, 0),  # truthy: each continuation page repeats the cursor record
    "mutate_between_pages": (int, 0, 0),  # every Nth list request applies one mutation first
    "token_ttl_s": (int, 0, 300),  # lifetime of OAuth access tokens issued from now on
}


class FaultError(ValueError):
    pass


def validate_faults(raw: dict[str, Any]) -> dict[str, Any]:
    """Check names and types; booleans are accepted for `duplicate_across_pages`."""
    if not isinstance(raw, dict):
        raise FaultError("faults must be a JSON object")
    clean: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in FAULT_FIELDS:
            raise FaultError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULT_FIELDS))}")
        kind, minimum, _ = FAULT_FIELDS[name]
        if kind is int:
            if isinstance(value, bool):
                value = int(value)
            if not isinstance(value, int) or value < minimum:
                raise FaultError(f"fault {name!r} must be an integer >= {minimum}")
        elif name == "malformed_kind" and value not in MALFORMED_KINDS:
            raise FaultError(f"malformed_kind must be one of {', '.join(MALFORMED_KINDS)}")
        clean[name] = value
    return clean


def default_faults() -> dict[str, Any]:
    return {name: default for name, (_, _, default) in FAULT_FIELDS.items()}
