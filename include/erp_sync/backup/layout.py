"""Where things live on the backup server. Pure functions: no I/O.

    raw/{source_system}/{stream}/{YYYY}/{MM}/{DD}/{run_id}/{batch_id}-{page_no}.json.gz
    manifests/{run_id}.json
    reports/{YYYY}/{MM}/{name}

Path parts that come from data (source system, stream, run id) are percent-encoded, so an Airflow
run id such as `manual__2026-01-01T02:00:00+00:00` stays one readable path component and no value can
climb out of its directory or pose as a temporary upload.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote, unquote

RAW_ROOT = "raw"
MANIFEST_ROOT = "manifests"
REPORT_ROOT = "reports"
MANIFEST_SUFFIX = ".json"
TMP_PREFIX = ".tmp-"


def path_part(value: str) -> str:
    """One safe path component for `value` (reversible with `unquote`)."""
    if not value:
        raise ValueError("an empty value cannot name a backup path component")
    encoded = quote(value, safe="-_:+=,@")
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


def raw_page_path(
    source_system: str, stream: str, created_at: datetime, run_id: str, batch_id: int, page_no: int
) -> str:
    day = created_at.astimezone(UTC)
    return (
        f"{RAW_ROOT}/{path_part(source_system)}/{path_part(stream)}/"
        f"{day:%Y}/{day:%m}/{day:%d}/{path_part(run_id)}/{batch_id}-{page_no}.json.gz"
    )


def manifest_path(run_id: str) -> str:
    return f"{MANIFEST_ROOT}/{path_part(run_id)}{MANIFEST_SUFFIX}"


def run_id_from_manifest_name(name: str) -> str | None:
    """The run id a `manifests/` entry names, or None for anything else (temporary uploads, strays)."""
    if name.startswith(TMP_PREFIX) or not name.endswith(MANIFEST_SUFFIX):
        return None
    return unquote(name[: -len(MANIFEST_SUFFIX)])


def report_path(name: str, when: datetime) -> str:
    """`reports/{YYYY}/{MM}/{name}`; `name` must be a plain file name (no directories, not hidden)."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or name in {".", ".."}:
        raise ValueError(f"report name {name!r} must be a plain file name")
    month = when.astimezone(UTC)
    return f"{REPORT_ROOT}/{month:%Y}/{month:%m}/{name}"


def parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""
