"""Measure the sandbox: list requests per second of 100 invoices each, server on one core.

    python -m erp_sync.sandbox.bench_server [--invoices 20000] [--seconds 5] [--clients 3]
                                            [--pipeline 4] [--pin-clients]

The server (one thread) is pinned to CPU 0 when the OS allows, so it uses one core; the load
generators replay one full pagination walk (`limit=100`, `starting_after=...`) on keep-alive
connections, a few requests in flight each, and read every whole response without parsing JSON.
Besides wall-clock req/s it prints requests per server CPU-second (utime+stime from /proc): the
server's capacity on one core even when a shared machine starves the generators."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import time
from typing import Any
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from erp_sync.sandbox.testing import running_sandbox


def _walk_urls(base_url: str, key: str) -> list[str]:
    """Every page path of one full walk over /v1/invoices (this also warms the JSON cache)."""
    paths, cursor = [], None
    while True:
        path = "/v1/invoices?limit=100" + (f"&starting_after={cursor}" if cursor else "")
        req = Request(base_url + path, headers={"Authorization": f"Bearer {key}"})
        with urlopen(req, timeout=30) as resp:
            page = json.loads(resp.read())
        paths.append(path)
        if not page["has_more"]:
            return paths
        cursor = page["data"][-1]["id"]


def _read_response(sock: socket.socket, buf: bytearray) -> int:
    """Read one HTTP response; returns its body length (asserts a 200)."""
    view = memoryview(buf)
    got = 0
    while True:
        n = sock.recv_into(view[got:], 1024)  # never past this response: pages are far bigger
        if not n:
            raise ConnectionError("server closed the connection")
        got += n
        end = buf.find(b"\r\n\r\n", 0, got)
        if end >= 0:
            break
    head = bytes(buf[:end]).decode("latin-1")
    if not head.startswith("HTTP/1.1 200"):
        raise RuntimeError(head.splitlines()[0])
    length = next(
        int(line.split(":", 1)[1]) for line in head.split("\r\n") if line.lower().startswith("content-length")
    )
    remaining = end + 4 + length - got
    if remaining < 0:
        raise RuntimeError("read past the end of a response (pages must be larger than 1 KiB)")
    while remaining > 0:  # MSG_WAITALL: the kernel fills the buffer, one syscall per body
        n = sock.recv_into(view, min(remaining, len(buf)), socket.MSG_WAITALL)
        if not n:
            raise ConnectionError("server closed the connection")
        remaining -= n
    return length


def _client(
    host: str, port: int, key: str, paths: list[str], seconds: float, cpus: set[int], depth: int, out: Any
) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    requests_ = [
        f"GET {p} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\r\n".encode() for p in paths
    ]
    buf = bytearray(4 << 20)
    sock = socket.create_connection((host, port), timeout=30)
    done, body_bytes, i = 0, 0, 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        # HTTP/1.1 pipelining: `depth` requests in flight hide the scheduling latency of a busy box.
        sock.sendall(b"".join(requests_[(i + k) % len(requests_)] for k in range(depth)))
        for _ in range(depth):
            body_bytes += _read_response(sock, buf)
        done += depth
        i += depth
    out.put((done, body_bytes, time.perf_counter() - started))
    sock.close()


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), 0.0 elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m erp_sync.sandbox.bench_server", description=__doc__)
    parser.add_argument("--invoices", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--pipeline", type=int, default=4, help="requests in flight per connection")
    parser.add_argument(
        "--pin-clients",
        action="store_true",
        help="keep load generators off the server's CPU (default: any CPU)",
    )
    args = parser.parse_args(argv)
    all_cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    with running_sandbox(invoices=args.invoices, seed=7) as sbx:
        server_cpu: set[int] = set()
        if len(all_cpus) >= 2 and hasattr(os, "sched_setaffinity"):
            server_cpu = {all_cpus[0]}
            os.sched_setaffinity(sbx.process.pid, server_cpu)
        client_cpus = set(all_cpus) - server_cpu if args.pin_clients else set(all_cpus)
        paths = _walk_urls(sbx.base_url, sbx.secret_key)
        split = urlsplit(sbx.base_url)
        host, port = split.hostname or "127.0.0.1", split.port or 80
        out: Any = mp.Queue()
        workers = [
            mp.Process(
                target=_client,
                args=(
                    host,
                    port,
                    sbx.secret_key,
                    paths[k:] + paths[:k],
                    args.seconds,
                    client_cpus,
                    args.pipeline,
                    out,
                ),
            )
            for k in range(args.clients)
        ]
        cpu_before = _cpu_seconds(sbx.process.pid)
        for w in workers:
            w.start()
        results = [out.get(timeout=args.seconds + 120) for _ in workers]
        for w in workers:
            w.join(timeout=30)
        server_cpu_s = _cpu_seconds(sbx.process.pid) - cpu_before
        total = sum(r[0] for r in results)
        body = sum(r[1] for r in results)
        elapsed = max(r[2] for r in results)
        rate = total / elapsed
        print(
            f"bench_server: {total} list requests (100 invoices each) in {elapsed:.2f}s = {rate:.0f} req/s, "
            f"{body / max(total, 1) / 1024:.0f} KiB/page, {body / elapsed / 1e6:.0f} MB/s; "
            f"server pinned to CPU {sorted(server_cpu) or 'any'}, "
            f"{args.clients} clients on {sorted(client_cpus) or 'any'}, "
            f"{args.invoices} invoices, {len(paths)} distinct pages; "
            f"server CPU busy {server_cpu_s / elapsed:.0%} "
            f"(=> {total / max(server_cpu_s, 1e-9):.0f} req per server CPU-second)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
