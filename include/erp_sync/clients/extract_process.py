"""A client's `iter_pages` in a child Python process: its own interpreter, its own GIL (ADR 0011).

The task's process keeps validation, mapping and loading; the child makes the requests, decodes the
pages and completes truncated child lists. A page comes back over a pipe as its bytes (body, fetched
tails) and its records as JSON: orjson writes a 100-invoice page's narrow records in ~0.2 ms and
reads them in ~0.55 ms, against ~0.75 ms each way to pickle them, ~1.3-1.7 ms to decode the body
again, and ~6 ms of CPU for the walk itself (requests, decoding, child lists).

    with ExtractProcess() as extraction:  # started early: its imports overlap the caller's work
        for page in extraction.iter_pages(client, spec, mode=..., window_start=..., window_end=...):
            ...

The child is a `subprocess`, not a `multiprocessing.Process`: a Celery prefork worker's process is
daemonic, and `multiprocessing` refuses children there. The client travels pickled over the child's
stdin (its settings, credentials included: never in argv, the environment or a log); its errors,
log records and progress reports come back as frames, and its final `stats` and `page_meta` land on
the caller's client. Whatever happens, leaving the block ends the child.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import IO, Any

import orjson

from erp_sync.clients.pages import whole_records
from erp_sync.core.batch import Page
from erp_sync.core.batching import ReadAhead
from erp_sync.streams.spec import StreamSpec

log = logging.getLogger(__name__)

_FRAME = struct.Struct(">BQ")  # kind, payload length
_READY, _PAGE, _LOG, _PROGRESS, _DONE, _ERROR = range(6)
# The child walks in a thread this many pages ahead of the one it gzips, pickles and writes: the walk
# mostly waits on the API with the GIL released, when those can run.
WALK_AHEAD_PAGES = 4
_PIPE_BYTES = 1 << 20  # a whole page in the pipe at once (Linux; the default is 64 KiB)
_F_SETPIPE_SZ = 1031
_STOP_TIMEOUT_S = 5.0


class ExtractProcessError(RuntimeError):
    """The extraction process failed outside the client: it could not start, could not be given the
    client, or ended without finishing."""


@dataclass(frozen=True)
class ExtractRequest:
    client: Any  # a SaaSClient, pickled with its settings (see SaaSClient.__getstate__)
    spec: StreamSpec
    mode: str
    window_start: datetime | None
    window_end: datetime
    record_fields: tuple[str, ...] | None
    log_level: int


class ExtractProcess:
    """One child process for one `iter_pages` walk."""

    def __init__(self, python: str = sys.executable) -> None:
        env = dict(os.environ)
        # The child imports what this process imports, from the same places (dags/ and include/ are
        # put on sys.path by Airflow, not by the environment).
        env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
        self._process = subprocess.Popen(  # noqa: S603 -- our own interpreter and module
            [python, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        self._ready = False
        _widen_pipe(self._process.stdout)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def exit_code(self) -> int | None:
        """None while the child runs."""
        return self._process.poll()

    def wait_ready(self) -> None:
        """Block until the child has imported what it walks with (~0.4 s of start-up); `iter_pages`
        waits for this by itself."""
        while not self._ready:
            self._handle(*self._receive(), client=None)

    def __enter__(self) -> ExtractProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def iter_pages(
        self,
        client: Any,
        spec: StreamSpec,
        *,
        mode: str,
        window_start: datetime | None,
        window_end: datetime,
        record_fields: Collection[str] | None = None,
    ) -> Iterator[Page]:
        """`client.iter_pages(...)`, walked in the child; the child ends with the walk."""
        request = ExtractRequest(
            client=client,
            spec=spec,
            mode=mode,
            window_start=window_start,
            window_end=window_end,
            record_fields=tuple(record_fields) if record_fields is not None else None,
            log_level=logging.getLogger("erp_sync").getEffectiveLevel(),
        )
        try:
            self._send(request)
            while True:
                kind, value = self._receive()
                if kind == _PAGE:
                    yield _page_from_frame(spec, value)
                elif kind == _DONE:
                    client.stats, client.page_meta = value
                    return
                else:
                    self._handle(kind, value, client)
        finally:
            self.close()

    def _handle(self, kind: int, value: Any, client: Any) -> None:
        if kind == _READY:
            self._ready = True
        elif kind == _LOG:
            logging.getLogger(value.name).handle(value)
        elif kind == _PROGRESS and client is not None:
            client.progress(*value)
        elif kind == _ERROR:
            raise value
        else:
            raise ExtractProcessError(f"unexpected message {kind} from the extraction process")

    def close(self) -> None:
        process = self._process
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def _send(self, request: ExtractRequest) -> None:
        try:
            payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        except (TypeError, AttributeError, pickle.PicklingError) as exc:
            raise ExtractProcessError(
                f"the client cannot be handed to the extraction process: {exc} (a client with an injected "
                "transport, clock or callback walks in this process: extract_process=False)"
            ) from exc
        stdin = self._process.stdin
        if stdin is None:
            raise ExtractProcessError("the extraction process has no stdin")
        try:
            stdin.write(payload)
            stdin.close()
        except BrokenPipeError:
            raise self._ended() from None

    def _receive(self) -> tuple[int, Any]:
        stdout = self._process.stdout
        if stdout is None:
            raise ExtractProcessError("the extraction process has no stdout")
        header = stdout.read(_FRAME.size)
        if len(header) < _FRAME.size:
            raise self._ended()
        kind, length = _FRAME.unpack(header)
        payload = stdout.read(length)
        if len(payload) < length:
            raise self._ended()
        return kind, pickle.loads(payload)  # noqa: S301 -- our own child, over our own pipe

    def _ended(self) -> ExtractProcessError:
        try:
            code = self._process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
        return ExtractProcessError(
            f"the extraction process ended before the walk did (exit code {code}; its stderr is in this log)"
        )


def _page_frame(page: Page, page_meta: dict[str, Any]) -> tuple[Any, ...]:
    try:
        codec, records = "json", orjson.dumps(page.records)
    except TypeError:  # what JSON cannot hold exactly (an integer beyond 64 bits): pickled
        codec, records = "pickle", pickle.dumps(page.records, protocol=pickle.HIGHEST_PROTOCOL)
    narrow_meta = page_meta if page.rebuild_whole is not None else None
    return (page.stream, page.page_no, page.url, page.body, page.fetched_children, page.versions,
            page.problems, page.fetched_at, codec, records, narrow_meta)  # fmt: skip


def _page_from_frame(spec: StreamSpec, frame: tuple[Any, ...]) -> Page:
    stream, page_no, url, body, fetched_children, versions, problems, fetched_at, codec, blob, meta = frame
    records = orjson.loads(blob) if codec == "json" else pickle.loads(blob)  # noqa: S301 -- our child
    return Page(
        stream=stream,
        page_no=page_no,
        url=url,
        body=body,
        records=records,
        versions=versions,
        problems=problems,
        fetched_at=fetched_at,
        fetched_children=fetched_children,
        # as the client sets it for a page it decoded narrow (`SaaSClient._page`)
        rebuild_whole=functools.partial(whole_records, spec, url, meta) if meta is not None else None,
    )


def _widen_pipe(pipe: IO[bytes] | None) -> None:
    if pipe is None or not sys.platform.startswith("linux"):
        return
    import fcntl

    with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep the default
        fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)


# ------------------------------------------------------------------------------------------ child


class _FrameWriter:
    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._lock = threading.Lock()  # child-list threads log too

    def send(self, kind: int, value: Any) -> None:
        payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._out.write(_FRAME.pack(kind, len(payload)))
            self._out.write(payload)
            self._out.flush()

    def send_error(self, exc: BaseException) -> None:
        exc.add_note("(raised in the extraction process)\n" + "".join(traceback.format_exception(exc)))
        try:
            self.send(_ERROR, exc)
        except Exception:  # an error that will not pickle still gets its text across
            self.send(_ERROR, ExtractProcessError("".join(traceback.format_exception(exc))))


class _ForwardLogs(logging.Handler):
    def __init__(self, writer: _FrameWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.msg = record.getMessage()
            record.args = None
            if record.exc_info:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
                record.exc_info = None
            self._writer.send(_LOG, record)
        except Exception:  # logging must not break the walk
            self.handleError(record)


def _child_main() -> int:
    frames = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, not into the frames
    sys.stdout = sys.stderr
    writer = _FrameWriter(frames)
    writer.send(_READY, None)
    request: ExtractRequest = pickle.load(sys.stdin.buffer)  # noqa: S301 -- from our parent
    root = logging.getLogger()
    root.handlers = [_ForwardLogs(writer)]
    root.setLevel(request.log_level)
    client = request.client
    client.progress = lambda stream, stats: writer.send(_PROGRESS, (stream, stats))
    try:
        pages = client.iter_pages(
            request.spec,
            mode=request.mode,
            window_start=request.window_start,
            window_end=request.window_end,
            record_fields=request.record_fields,
        )
        with ReadAhead(pages, WALK_AHEAD_PAGES, name="walk") as ahead:
            for page in ahead:
                writer.send(_PAGE, _page_frame(page, client.page_meta))
        writer.send(_DONE, (client.stats, client.page_meta))
    except BrokenPipeError:
        return 1  # the task stopped reading: it has closed the walk
    except BaseException as exc:  # every failure is the task's to raise
        writer.send_error(exc)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    # Run the module's own copy, not __main__'s: what the child pickles must unpickle in the task.
    from erp_sync.clients.extract_process import _child_main as main

    sys.exit(main())
