"""SFTP primitives for verified backups: connect with clear errors, atomic upload, read-back hashing.

Everything takes a paramiko `SFTPClient` (what `SFTPHook.get_conn()` returns). Paths are relative to
the SFTP session's start directory.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import socket
import stat
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko import SFTPClient

from erp_sync.backup.errors import BackupTargetUnavailable, PinnedHostKeyMismatch, RemoteVerificationError
from erp_sync.backup.layout import TMP_PREFIX, parent

log = logging.getLogger(__name__)

# An upload's temporary file lives for seconds; one an hour old was left by an upload that never
# finished (a killed worker, a dropped link), never by one still running on another machine.
STALE_UPLOAD_S = 3600.0

CHUNK = 1 << 20
# Failures that mean "the server or the link is not working", as opposed to a bug in our code.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, paramiko.SSHException, socket.timeout)

# Servers seen without the `check-file` extension (OpenSSH has none): ask once per client.
_NO_CHECK_FILE: weakref.WeakSet[SFTPClient] = weakref.WeakSet()


@dataclass(frozen=True)
class RemoteFile:
    """A file proven to be on the server with this size and SHA-256."""

    path: str
    size: int
    sha256: str


_TARGETS: weakref.WeakKeyDictionary[SFTPClient, str] = weakref.WeakKeyDictionary()


def describe_target(sftp: SFTPClient) -> str:
    """`host:port` of the server behind a client, for error messages (remembered, so it is still
    known after the link has died)."""
    known = _TARGETS.get(sftp)
    if known is not None:
        return known
    try:
        transport = sftp.get_channel().get_transport()  # type: ignore[union-attr]
        host, port = transport.getpeername()[:2]
    except Exception:
        return "the SFTP server (address unknown)"
    _TARGETS[sftp] = f"{host}:{port}"
    return _TARGETS[sftp]


def connect(get_conn: Callable[[], SFTPClient], *, host: str, port: int | None) -> SFTPClient:
    """Open the SFTP session with `get_conn` (e.g. `SFTPHook(...).get_conn`), translating failures.

    A host key that differs from the pinned one raises `PinnedHostKeyMismatch` (a
    `paramiko.BadHostKeyException`); anything else raises `BackupTargetUnavailable` naming host:port.
    """
    target = f"{host}:{port}" if port else host
    try:
        sftp = get_conn()
    except paramiko.BadHostKeyException as exc:
        raise PinnedHostKeyMismatch(target, exc.hostname, exc.key, exc.expected_key) from exc
    except paramiko.AuthenticationException as exc:
        raise BackupTargetUnavailable(f"SFTP {target}: authentication failed ({exc})") from exc
    except TRANSPORT_ERRORS as exc:
        raise BackupTargetUnavailable(f"SFTP {target} unreachable: {type(exc).__name__}: {exc}") from exc
    _TARGETS[sftp] = target
    return sftp


@contextmanager
def sftp_errors(sftp: SFTPClient, action: str) -> Iterator[None]:
    """Turn a transport/SFTP failure during `action` into `BackupTargetUnavailable` naming the server."""
    try:
        yield
    except TRANSPORT_ERRORS as exc:
        raise BackupTargetUnavailable(
            f"SFTP {describe_target(sftp)}: {action} failed: {type(exc).__name__}: {exc}"
        ) from exc


def exists(sftp: SFTPClient, path: str) -> bool:
    try:
        sftp.stat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def makedirs(sftp: SFTPClient, directory: str, known: set[str] | None = None) -> None:
    """`mkdir -p` over SFTP; `known` caches directories already seen during one drain."""
    if not directory:
        return
    seen = known if known is not None else set()
    current = ""
    for part in directory.split("/"):
        current = f"{current}/{part}" if current else part
        if current in seen:
            continue
        if not exists(sftp, current):
            try:
                sftp.mkdir(current)
            except OSError:
                if not exists(sftp, current):  # a concurrent drain may have created it first
                    raise
        seen.add(current)


def _local_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _server_sha256(sftp: SFTPClient, path: str) -> str | None:
    """The server's own SHA-256 of `path` via the `check-file` extension, or None if it has none."""
    if sftp in _NO_CHECK_FILE:
        return None
    try:
        with sftp.open(path, "rb") as handle:
            digest: bytes = handle.check("sha256", 0, 0, 0)
    except (OSError, paramiko.SFTPError):
        _NO_CHECK_FILE.add(sftp)
        return None
    return digest.hex()


def read_back(sftp: SFTPClient, path: str) -> tuple[bytes, str]:
    """Download `path` whole: its bytes and SHA-256."""
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    with sftp.open(path, "rb") as handle:
        handle.prefetch()
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            chunks.append(chunk)
    return b"".join(chunks), digest.hexdigest()


def download(sftp: SFTPClient, path: str, target: Path) -> tuple[int, str]:
    """Copy `path` to the local file `target`, streamed: its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    with sftp.open(path, "rb") as handle, target.open("wb") as out:
        handle.prefetch()
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return size, digest.hexdigest()


def remote_sha256(sftp: SFTPClient, path: str) -> tuple[str, int]:
    """SHA-256 and size of a remote file: the server's hash extension if present, else a read-back."""
    size = int(sftp.stat(path).st_size or 0)
    server_hash = _server_sha256(sftp, path)
    if server_hash is not None:
        return server_hash, size
    data, digest = read_back(sftp, path)
    return digest, len(data)


def put_verified(sftp: SFTPClient, path: str, data: bytes, known_dirs: set[str] | None = None) -> RemoteFile:
    """Upload `data` to `path` atomically and prove it arrived intact.

    Written to a `.tmp-` name in the same directory, size-checked, renamed over `path` with
    `posix-rename` (atomic replace: readers see the old file or the new one, never half of one), then
    hashed on the server side (read back) and compared with what was sent.
    """
    expected = _local_sha256(data)
    directory = parent(path)
    name = path.rsplit("/", 1)[-1]
    tmp = f"{directory}/{TMP_PREFIX}{name}-{uuid.uuid4().hex[:12]}" if directory else f"{TMP_PREFIX}{name}"
    with sftp_errors(sftp, f"upload of {path}"):
        makedirs(sftp, directory, known_dirs)
        try:
            with sftp.open(tmp, "wb") as handle:
                handle.set_pipelined(True)
                handle.write(data)
            written = int(sftp.stat(tmp).st_size or 0)
            if written != len(data):
                raise RemoteVerificationError(
                    f"SFTP {describe_target(sftp)}: {path}: wrote {written} bytes of {len(data)}"
                )
            sftp.posix_rename(tmp, path)
        except BaseException:
            _remove_quietly(sftp, tmp)
            raise
    with sftp_errors(sftp, f"verification of {path}"):
        got, size = remote_sha256(sftp, path)
    if got != expected or size != len(data):
        raise RemoteVerificationError(
            f"SFTP {describe_target(sftp)}: {path} reads back as sha256 {got} ({size} bytes), "
            f"uploaded {expected} ({len(data)} bytes)"
        )
    return RemoteFile(path, len(data), expected)


def _remove_quietly(sftp: SFTPClient, path: str) -> None:
    try:
        sftp.remove(path)
    except Exception:  # cleanup after a failure must not hide the failure
        return


def sweep_stale_uploads(
    sftp: SFTPClient, directory: str, *, older_than_s: float = STALE_UPLOAD_S, now: float | None = None
) -> int:
    """Delete the temporary files interrupted uploads left in `directory` (`put_verified`'s
    `.tmp-` names, last modified over `older_than_s` ago); how many. An absent directory has none."""
    with sftp_errors(sftp, f"listing of {directory or '.'}"):
        try:
            entries = sftp.listdir_attr(directory or ".")
        except FileNotFoundError:
            return 0
    cutoff = (time.time() if now is None else now) - older_than_s
    removed = 0
    for entry in entries:
        is_file = stat.S_ISREG(entry.st_mode or 0)
        if entry.filename.startswith(TMP_PREFIX) and is_file and (entry.st_mtime or 0) < cutoff:
            path = f"{directory}/{entry.filename}" if directory else entry.filename
            with sftp_errors(sftp, f"removal of {path}"):
                if remove(sftp, path):
                    removed += 1
                    log.info("removed %s, left by an upload that did not finish", path)
    return removed


def listdir(sftp: SFTPClient, directory: str) -> list[str]:
    """Names in `directory`; an absent directory is empty."""
    try:
        return sorted(sftp.listdir(directory))
    except FileNotFoundError:
        return []


def remove(sftp: SFTPClient, path: str) -> bool:
    """Delete a file; False if it was already gone."""
    try:
        sftp.remove(path)
    except FileNotFoundError:
        return False
    return True
