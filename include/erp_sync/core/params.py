"""Validation of DAG run parameters: a bad parameter fails before any read or write, saying which
parameter is wrong and why."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class InvalidParamError(ValueError):
    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"parameter {name!r}: {why}")
        self.name = name
        self.why = why


def parse_utc(name: str, value: Any) -> datetime | None:
    """ISO-8601 with an explicit offset (or Z); None/empty means not given."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidParamError(name, f"{value!r} is not an ISO-8601 timestamp ({exc})") from exc
    else:
        raise InvalidParamError(name, f"expected an ISO-8601 string, got {type(value).__name__}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidParamError(
            name, f"{value!r} has no timezone; write it as UTC, e.g. 2026-11-01T00:00:00Z"
        )
    return parsed


def parse_bool(name: str, value: Any, default: bool = False) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    raise InvalidParamError(name, f"expected true or false, got {value!r}")


def parse_streams(name: str, value: Any, known: Iterable[str], default: Iterable[str]) -> list[str]:
    known_list = list(known)
    if value is None or value == [] or value == "":
        return list(default)
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidParamError(name, f"expected a list of stream names, got {value!r}")
    unknown = [v for v in value if v not in known_list]
    if unknown:
        raise InvalidParamError(name, f"unknown stream(s) {unknown}; known: {sorted(known_list)}")
    return list(dict.fromkeys(value))


def parse_window(
    start_name: str, start: Any, end_name: str, end: Any
) -> tuple[datetime | None, datetime | None]:
    start_at = parse_utc(start_name, start)
    end_at = parse_utc(end_name, end)
    if start_at and end_at and end_at <= start_at:
        raise InvalidParamError(
            end_name, f"{end_at.isoformat()} is not after {start_name} {start_at.isoformat()}"
        )
    return start_at, end_at


@dataclass(frozen=True)
class SyncParams:
    streams: list[str]
    full_refresh: bool
    dry_run: bool
    window_start: datetime | None
    window_end: datetime | None


def parse_sync_params(
    conf: Mapping[str, Any], known_streams: Iterable[str], default_streams: Iterable[str]
) -> SyncParams:
    allowed = {"streams", "full_refresh", "dry_run", "window_start", "window_end"}
    unexpected = sorted(set(conf) - allowed)
    if unexpected:
        raise InvalidParamError(unexpected[0], f"not a parameter of this DAG; allowed: {sorted(allowed)}")
    start, end = parse_window("window_start", conf.get("window_start"), "window_end", conf.get("window_end"))
    return SyncParams(
        streams=parse_streams("streams", conf.get("streams"), known_streams, default_streams),
        full_refresh=parse_bool("full_refresh", conf.get("full_refresh")),
        dry_run=parse_bool("dry_run", conf.get("dry_run")),
        window_start=start,
        window_end=end,
    )
