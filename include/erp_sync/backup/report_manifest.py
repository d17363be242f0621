"""The sidecar manifest of a drift report's backed-up files (ADR 0025): what proves them intact.

A report's four renderings (JSON, items CSV, totals CSV, HTML) are uploaded to `reports/{YYYY}/{MM}/`
one by one, each read back and verified. After the last one, the reconcile uploads this document
beside the JSON, as `{json name without .json}.manifest.json`:

    {"format": "erp-sync-report-manifest/1", "report_id": 42, "version": 1,
     "period_start": ..., "period_end": ..., "streams": [...], "status": "DRIFT",
     "created_at": ..., "dag_id": ..., "run_id": ..., "content_sha256": ..., "item_count": 3,
     "backup_path": <the JSON's remote path, what drift_reports.backup_path holds>,
     "files": {"json"|"csv"|"totals_csv"|"html": {"name", "path", "size", "sha256"}}}

Its presence says every file was uploaded and verified; its sizes and SHA-256s let a restore prove
that each file is still the one uploaded. The identity fields let a restore select reports (by the
day they were written, or by run) without downloading the JSON, and are checked against it.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from erp_sync.backup.manifest import dumps as dumps  # re-exported: the same stable bytes as a run's manifest
from erp_sync.core.timeutil import NaiveDatetimeError, parse_iso8601

FORMAT = "erp-sync-report-manifest/1"
SUFFIX = ".manifest.json"
FILE_KINDS = ("json", "csv", "totals_csv", "html")
STATUSES = frozenset({"OK", "DRIFT", "ERROR"})
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class ReportManifestError(ValueError):
    """A report manifest that is not one, or does not hold together; the message names the file."""


@dataclass(frozen=True)
class ReportFile:
    name: str
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ReportManifest:
    """One report's backup as its sidecar describes it."""

    where: str  # the sidecar's remote path
    report_id: int
    version: int
    period_start: datetime
    period_end: datetime
    streams: tuple[str, ...]
    status: str
    created_at: datetime
    dag_id: str | None
    run_id: str | None
    content_sha256: str
    item_count: int
    backup_path: str
    files: Mapping[str, ReportFile]

    def written_on(self) -> date:
        return self.created_at.astimezone(UTC).date()


def manifest_name(json_name: str) -> str:
    """`drift-report-7-v1-....json` -> `drift-report-7-v1-....manifest.json`."""
    if not json_name.endswith(".json") or json_name.endswith(SUFFIX):
        raise ValueError(f"{json_name!r} is not a report's JSON file name")
    return json_name[: -len(".json")] + SUFFIX


def is_manifest_name(name: str) -> bool:
    return name.endswith(SUFFIX) and not name.startswith(".")


def json_name_of(sidecar_name: str) -> str:
    return sidecar_name[: -len(SUFFIX)] + ".json"


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r} in a report manifest")
    return value.astimezone(UTC).isoformat()


def build_report_manifest(
    report: Mapping[str, Any], uploaded: Mapping[str, tuple[str, str, bytes]]
) -> dict[str, Any]:
    """The sidecar of `report` (a `store.drift.get_report` row) whose files, by kind, were uploaded
    as (name, remote path, bytes)."""
    missing = set(FILE_KINDS) - uploaded.keys()
    if missing:
        raise ValueError(f"report {report['report_id']}: no uploaded file of kind {sorted(missing)}")
    files = {
        kind: {"name": name, "path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for kind, (name, path, data) in uploaded.items()
    }
    return {
        "format": FORMAT,
        "report_id": int(report["report_id"]),
        "version": int(report["version"]),
        "period_start": _iso(report["period_start"]),
        "period_end": _iso(report["period_end"]),
        "streams": sorted(report["streams"]),
        "status": report["status"],
        "created_at": _iso(report["created_at"]),
        "dag_id": report.get("dag_id"),
        "run_id": report.get("run_id"),
        "content_sha256": str(report["content_sha256"]).strip(),
        "item_count": int(report["item_count"]),
        "backup_path": files["json"]["path"],
        "files": files,
    }


# -- reading ---------------------------------------------------------------------------------------


def _fail(where: str, problem: str) -> ReportManifestError:
    return ReportManifestError(f"{where}: {problem}")


def _field(document: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = document.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _fail(where, f"field {name!r} is {value!r}, not a {getattr(kind, '__name__', kind)}")
    return value


def parse_aware(value: Any, name: str, where: str) -> datetime:
    """An ISO timestamp with its offset, as an aware UTC datetime; a naive one is refused."""
    try:
        return parse_iso8601(value)
    except NaiveDatetimeError:
        raise _fail(where, f"{name} {value!r} has no UTC offset") from None
    except (TypeError, ValueError):
        raise _fail(where, f"{name} {value!r} is not an ISO timestamp") from None


def _positive(document: Mapping[str, Any], name: str, where: str) -> int:
    value = int(_field(document, name, int, where))
    if value < 1:
        raise _fail(where, f"{name} must be at least 1, not {value}")
    return value


def _file(kind: str, raw: Any, where: str) -> ReportFile:
    if not isinstance(raw, Mapping):
        raise _fail(where, f"files.{kind} is not an object")
    name, path = _field(raw, "name", str, where), _field(raw, "path", str, where)
    size, sha = _field(raw, "size", int, where), _field(raw, "sha256", str, where)
    if size < 0 or not SHA256_HEX.match(sha):
        raise _fail(where, f"files.{kind} has size {size} and sha256 {sha!r}")
    if path.rsplit("/", 1)[-1] != name or name.startswith("."):
        raise _fail(where, f"files.{kind}: path {path!r} does not end in its name {name!r}")
    return ReportFile(name=name, path=path, size=size, sha256=sha)


def _optional_text(document: Mapping[str, Any], name: str, where: str) -> str | None:
    value = document.get(name)
    if value is not None and not isinstance(value, str):
        raise _fail(where, f"field {name!r} is {value!r}, not text")
    return value


def loads(data: bytes, where: str) -> ReportManifest:
    """Parse and check a report's sidecar read from `where`; `ReportManifestError` names it."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(where, f"not a JSON report manifest ({exc})") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise _fail(where, f"not an {FORMAT} document")
    files_raw = _field(document, "files", dict, where)
    if set(files_raw) != set(FILE_KINDS):
        raise _fail(where, f"lists files {sorted(files_raw)}, expected {list(FILE_KINDS)}")
    files = {kind: _file(kind, files_raw[kind], where) for kind in FILE_KINDS}
    streams = _field(document, "streams", list, where)
    if not streams or not all(isinstance(s, str) and s for s in streams) or streams != sorted(set(streams)):
        raise _fail(where, f"streams {streams!r} are not sorted, distinct stream names")
    status = _field(document, "status", str, where)
    if status not in STATUSES:
        raise _fail(where, f"status {status!r} is not one of {sorted(STATUSES)}")
    content_sha = _field(document, "content_sha256", str, where)
    if not SHA256_HEX.match(content_sha):
        raise _fail(where, f"content_sha256 {content_sha!r} is not a SHA-256")
    if document.get("backup_path") != files["json"].path:
        raise _fail(where, f"backup_path {document.get('backup_path')!r} is not its JSON's path")
    item_count = _field(document, "item_count", int, where)
    if item_count < 0:
        raise _fail(where, f"item_count {item_count} is negative")
    return ReportManifest(
        where=where,
        report_id=_positive(document, "report_id", where),
        version=_positive(document, "version", where),
        period_start=parse_aware(document.get("period_start"), "period_start", where),
        period_end=parse_aware(document.get("period_end"), "period_end", where),
        streams=tuple(streams),
        status=status,
        created_at=parse_aware(document.get("created_at"), "created_at", where),
        dag_id=_optional_text(document, "dag_id", where),
        run_id=_optional_text(document, "run_id", where),
        content_sha256=content_sha,
        item_count=item_count,
        backup_path=files["json"].path,
        files=files,
    )
