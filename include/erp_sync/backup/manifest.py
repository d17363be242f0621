"""The per-run manifest: what a run's backup holds and how to prove each file is intact.

One JSON document per run at `manifests/{run_id}.json`, listing every raw page file (path, size,
SHA-256 of the gzip and of the raw page, record count, batch, page number, URL and `page_meta`), the
run's batches from `erp_sync.sync_batches` (window, counts, input hash, cursor before/after) and, per
stream, the cursor before the run and after it. Restore reads only manifests and the files they name,
so a backup can rebuild an empty database on its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from erp_sync.backup.errors import ManifestError
from erp_sync.store.outbox import OutboxRow

FORMAT = "erp-sync-backup-manifest/1"


@dataclass(frozen=True)
class FileEntry:
    """One raw page file as the manifest records it."""

    path: str
    size: int
    sha256_gz: str
    sha256_raw: str
    raw_size: int
    record_count: int
    batch_id: int
    source_system: str
    stream: str
    page_no: int
    url: str
    page_meta: dict[str, Any]
    created_at: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def file_entry(row: OutboxRow, path: str, size: int, sha256_gz: str, raw_size: int) -> FileEntry:
    return FileEntry(
        path=path,
        size=size,
        sha256_gz=sha256_gz,
        sha256_raw=row.sha256,
        raw_size=raw_size,
        record_count=row.record_count,
        batch_id=row.batch_id,
        source_system=row.source_system,
        stream=row.stream,
        page_no=row.page_no,
        url=row.url,
        page_meta=row.page_meta,
        created_at=_iso(row.created_at),
    )


def _stream_cursors(batches: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per `source_system/stream`: the cursor before the run's first batch and after its last move."""
    cursors: dict[str, dict[str, Any]] = {}
    for batch in sorted(batches, key=lambda b: b["batch_id"]):
        key = f"{batch['source_system']}/{batch['stream']}"
        entry = cursors.setdefault(
            key, {"cursor_before": _iso(batch.get("cursor_before")), "cursor_after": None}
        )
        if batch.get("cursor_after") is not None:
            entry["cursor_after"] = _iso(batch["cursor_after"])
    for entry in cursors.values():
        if entry["cursor_after"] is None:
            entry["cursor_after"] = entry["cursor_before"]  # no batch moved it
    return cursors


def build_manifest(
    run_id: str,
    rows: Sequence[OutboxRow],
    files: Sequence[FileEntry],
    batches: Sequence[Mapping[str, Any]],
    written_at: datetime,
) -> dict[str, Any]:
    """The manifest document for one run (JSON-safe)."""
    created = [r.created_at for r in rows]
    batch_ids = sorted({f.batch_id for f in files})
    return {
        "format": FORMAT,
        "run_id": run_id,
        "written_at": _iso(written_at),
        "first_page_at": _iso(min(created)) if created else None,
        "last_page_at": _iso(max(created)) if created else None,
        "batch_ids": batch_ids,
        "batches": [{k: _iso(v) for k, v in b.items()} for b in sorted(batches, key=lambda b: b["batch_id"])],
        "streams": _stream_cursors(batches),
        "files": [f.as_dict() for f in files],
        "totals": {
            "files": len(files),
            "bytes": sum(f.size for f in files),
            "raw_bytes": sum(f.raw_size for f in files),
            "records": sum(f.record_count for f in files),
        },
    }


def dumps(manifest: Mapping[str, Any]) -> bytes:
    """Stable bytes: sorted keys, so an unchanged run rewrites an identical manifest."""
    return json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"


def loads(data: bytes, where: str) -> dict[str, Any]:
    """Parse and sanity-check a manifest read from `where`."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{where}: not a JSON manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ManifestError(f"{where}: not an {FORMAT} manifest")
    files = manifest.get("files")
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        raise ManifestError(f"{where}: manifest has no file list")
    required = {
        "path",
        "size",
        "sha256_gz",
        "sha256_raw",
        "batch_id",
        "source_system",
        "stream",
        "page_no",
        "url",
    }
    for entry in files:
        missing = required - entry.keys()
        if missing:
            raise ManifestError(f"{where}: file entry {entry.get('path')!r} lacks {sorted(missing)}")
    return manifest


def parse_time(value: Any) -> datetime | None:
    """A manifest timestamp back to an aware UTC datetime."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ManifestError(f"naive timestamp {value!r} in a manifest")
    return parsed.astimezone(UTC)
