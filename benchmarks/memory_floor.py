#!/usr/bin/env python3
"""What one idle TLS connection costs in memory, per OpenSSL, and what aiotls keeps in Python.

    python benchmarks/memory_floor.py [--objects N] [--no-traced] [--conns N] [--json out.json]

C memory: each measurement runs in a FRESH process (freed memory would be reused and hide
the cost), makes a warm-up batch, then N more objects kept alive, and reports the growth of
its RSS (/proc/self/status) per object:

- bare: an SSL* from SSL_new on a server context; with Python's ssl module (no bare SSL_new
  there) an SSLObject on two MemoryBIOs, its Python objects included;
- handshaken: the server side of a completed in-memory TLS 1.3 handshake (X25519, ECDSA
  P-256, against a Python ssl client) that received and sent 100 bytes. For the wheel's
  OpenSSL that is an aiotls.TLSEngine after engine.compact() (fresh memory BIOs, as aiotls's
  transport does once the handshake is over), its Python objects included; for Python's
  ssl, the SSLObject and its two MemoryBIOs (which cannot be swapped).

Python memory (--no-traced skips it): an aiotls+uvloop server (bench.py's greet app)
under tracemalloc, holding N idle connections from a client process; the traced bytes it
grew by per connection, grouped by where they were allocated (aiotls, asyncio, uvloop,
other), and the top lines.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shlex
import ssl
import subprocess
import sys
import tempfile
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench

KINDS = ("wheel-bare", "wheel-handshaken", "ssl-bare", "ssl-handshaken")
WARMUP = 100  # objects made (and kept) before the RSS baseline
PAYLOAD = b"x" * 100
TIMEOUT = 300.0
TRACED_WARMUP = 50  # connections opened and closed before the tracemalloc baseline
SETTLE = 0.3  # seconds the traced server gets to park its handlers before a snapshot


# ---------------------------------------------------------------------------- C memory


def server_files(certdir: Path) -> tuple[Path, Path]:
    """The ECDSA P-256 (key, chain) bench.py's handshake workloads serve."""
    return bench.server_cert(certdir, "hs")


def wheel_bare(certdir: Path) -> Callable[[], object]:
    """SSL_new on a pyOpenSSL server context (the wheel's OpenSSL): the SSL* alone."""
    from cryptography.hazmat.bindings.openssl.binding import Binding
    from OpenSSL import SSL

    key, chain = server_files(certdir)
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.use_certificate_chain_file(str(chain))
    ctx.use_privatekey_file(str(key))
    pointer = ctx._context  # the SSL_CTX*, for a bare SSL_new
    return lambda: Binding.lib.SSL_new(pointer)  # never freed: the process ends first


def ssl_bare(certdir: Path) -> Callable[[], object]:
    """A server SSLObject on two MemoryBIOs (Python's ssl module, the system's OpenSSL)."""
    key, chain = server_files(certdir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(chain, key)
    return lambda: ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)


class Client:
    """A Python ssl client over memory BIOs, the peer of one in-memory handshake."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=bench.SERVER_NAME)

    def handshake(self, server: Callable[[bytes], bytes]) -> None:
        """Handshake with `server` (fed our bytes, returns its own); then 100 bytes each way."""
        while True:
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                self.incoming.write(server(self.outgoing.read()))
                continue
            break
        self.obj.write(PAYLOAD)
        self.incoming.write(server(self.outgoing.read()))  # Finished and data; back: tickets, data
        got = b""
        while len(got) < len(PAYLOAD):
            got += self.obj.read(len(PAYLOAD))
        if not got.startswith(PAYLOAD):
            raise RuntimeError(f"the server sent back {got!r}")


def wheel_handshaken(certdir: Path) -> Callable[[], object]:
    """An aiotls.TLSEngine (the wheel's OpenSSL) after a handshake, 100 bytes and compact()."""
    sys.path.insert(0, str(bench.REPO_ROOT))  # this checkout's aiotls
    import aiotls

    key, chain = server_files(certdir)
    ctx = aiotls.create_secure_context(key=key.read_text(), cert=chain.read_text())
    client_ctx = bench.client_context(certdir)

    def make() -> object:
        engine = aiotls.TLSEngine(ctx, server_side=True)

        def step(data: bytes) -> bytes:
            engine.receive_data(data)
            if engine.handshake_complete and (got := engine.read()):
                engine.send(got)
            out: bytes = engine.data_to_send()
            return out

        Client(client_ctx).handshake(step)
        engine.compact()
        return engine

    return make


def ssl_handshaken(certdir: Path) -> Callable[[], object]:
    """A server SSLObject and its MemoryBIOs after a handshake and 100 bytes each way."""
    key, chain = server_files(certdir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(chain, key)
    client_ctx = bench.client_context(certdir)

    def make() -> object:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_side=True)

        def step(data: bytes) -> bytes:
            incoming.write(data)
            try:
                obj.do_handshake()
                if got := obj.read(len(PAYLOAD)):
                    obj.write(got)
            except ssl.SSLWantReadError:
                pass  # more to come from the client
            return outgoing.read()

        Client(client_ctx).handshake(step)
        return obj, incoming, outgoing

    return make


FACTORIES = {"wheel-bare": wheel_bare, "wheel-handshaken": wheel_handshaken,
             "ssl-bare": ssl_bare, "ssl-handshaken": ssl_handshaken}


def measure_main(kind: str, certdir: Path, objects: int) -> None:
    """Entry point of one fresh measuring process: RSS growth per object, as JSON."""
    make = FACTORIES[kind](certdir)
    kept = [make() for _ in range(WARMUP)]
    gc.collect()
    before = bench.rss_kib(os.getpid())
    kept += [make() for _ in range(objects)]
    gc.collect()
    after = bench.rss_kib(os.getpid())
    print(json.dumps({"kind": kind, "objects": objects, "kept": len(kept),
                      "kib_per_object": (after - before) / objects}))


# ---------------------------------------------------------------------------- Python memory


def where(filename: str) -> str:
    """The group of an allocation site: aiotls, asyncio, the loop's C code or other.

    An allocation made by C code (uvloop's loop, its transports) with no Python frame of
    its own is traced to the outermost one, asyncio/runners.py's run_until_complete.
    """
    parts = Path(filename).parts
    if parts[-2:] == ("asyncio", "runners.py"):
        return "loop (C)"
    for group in ("aiotls", "asyncio", "uvloop"):
        if group in parts:
            return group
    return "other"


async def traced_server(certdir: Path, conns: int, top: int) -> dict[str, Any]:
    """Serve a client process holding `conns` idle connections; traced growth per connection."""
    live = 0
    changed = asyncio.Event()

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """bench's greet app, keeping count of the connections it holds."""
        nonlocal live
        live += 1
        changed.set()
        try:
            await bench.greet_handler(reader, writer)
        finally:
            live -= 1
            changed.set()

    async def until(condition: Callable[[], bool]) -> None:
        while not condition():
            changed.clear()
            await changed.wait()

    server = await bench.start_app_server("aiotls+uvloop", "idle", certdir, greet=greet)
    port = server.sockets[0].getsockname()[1]
    client = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--role", "client", "--port", str(port), "--certdir",
        str(certdir), "--conns", str(conns), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert client.stdin is not None and client.stdout is not None
    try:
        tracemalloc.start()
        if await client.stdout.readline() != b"WARM\n":  # warm-up connections opened, closed
            raise RuntimeError("the client failed in its warm-up")
        await until(lambda: live == 0)
        await asyncio.sleep(SETTLE)
        gc.collect()
        before = tracemalloc.take_snapshot()
        client.stdin.write(b"GO\n")
        if await client.stdout.readline() != b"OPEN\n":
            raise RuntimeError("the client could not open its connections")
        await until(lambda: live == conns)
        await asyncio.sleep(SETTLE)  # let every handler park in its read
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
    finally:
        client.stdin.close()
        await asyncio.wait_for(client.wait(), 30)
        server.close()
    groups: Counter[str] = Counter()
    for stat in after.compare_to(before, "filename"):
        groups[where(stat.traceback[0].filename)] += stat.size_diff
    lines = after.compare_to(before, "lineno")[:top]
    return {"conns": conns, "bytes_per_conn": sum(groups.values()) / conns,
            "groups": {g: n / conns for g, n in groups.most_common()},
            "top": [{"line": f"{where(s.traceback[0].filename)}: "
                             f"{'/'.join(Path(s.traceback[0].filename).parts[-2:])}:"
                             f"{s.traceback[0].lineno}",
                     "bytes_per_conn": s.size_diff / conns,
                     "count_per_conn": s.count_diff / conns} for s in lines]}


def traced_main(certdir: Path, conns: int, top: int) -> None:
    """Entry point of the traced server process: print its result as JSON."""
    import uvloop

    print(json.dumps(uvloop.run(traced_server(certdir, conns, top))))


def client_main(port: int, certdir: Path, conns: int) -> None:
    """Open and close the warm-up connections, then hold `conns` until stdin closes."""
    ctx = bench.client_context(certdir)
    for _ in range(TRACED_WARMUP):
        bench.tls_connect(port, ctx, None).close()
    print("WARM", flush=True)
    if sys.stdin.readline().strip() != "GO":
        return
    held = [bench.tls_connect(port, ctx, None) for _ in range(conns)]
    print("OPEN", flush=True)
    sys.stdin.read()  # until the server is done with its snapshot
    for tls in held:
        tls.close()


# ---------------------------------------------------------------------------- orchestration


def child(args: argparse.Namespace, *extra: str) -> dict[str, Any] | None:
    """Run this script as a child with `extra` arguments; its JSON result, or None."""
    proc = subprocess.run(
        [sys.executable, __file__, "--certdir", str(args.certdir), "--objects",
         str(args.objects), "--conns", str(args.conns), "--top", str(args.top), *extra],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=bench.REPO_ROOT, check=False)
    if proc.returncode != 0:
        print(f"{extra}: failed: {proc.stderr.strip().splitlines()[-3:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def report(c: dict[str, dict[str, Any]], traced: dict[str, Any] | None) -> str:
    """The C-memory table, then aiotls's Python bytes per idle connection, in markdown."""
    from OpenSSL import SSL

    wheel = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()

    def cell(kind: str) -> str:
        return f"{c[kind]['kib_per_object']:.1f}" if kind in c else "-"

    def diff(state: str) -> str:
        if f"wheel-{state}" not in c or f"ssl-{state}" not in c:
            return "-"
        w, s = c[f"wheel-{state}"]["kib_per_object"], c[f"ssl-{state}"]["kib_per_object"]
        return f"{w - s:+.1f}"

    lines = [f"| KiB per object (RSS growth) | {wheel} (wheel) | {ssl.OPENSSL_VERSION} "
             "(Python ssl) | wheel - ssl |", "|---|---:|---:|---:|",
             f"| bare: SSL_new / SSLObject + 2 MemoryBIO | {cell('wheel-bare')} | "
             f"{cell('ssl-bare')} | {diff('bare')} |",
             f"| handshaken + 100 B: TLSEngine after compact() / SSLObject + 2 MemoryBIO | "
             f"{cell('wheel-handshaken')} | {cell('ssl-handshaken')} | {diff('handshaken')} |"]
    if traced:
        lines += ["", f"aiotls+uvloop server, {traced['conns']} idle streams connections: "
                  f"{traced['bytes_per_conn']:,.0f} traced Python bytes per connection (" +
                  ", ".join(f"{g} {n:,.0f}" for g, n in traced["groups"].items()) + ")", "",
                  "| bytes/conn | allocations/conn | where |", "|---:|---:|---|"]
        lines += [f"| {t['bytes_per_conn']:,.0f} | {t['count_per_conn']:.2f} | `{t['line']}` |"
                  for t in traced["top"]]
    return "\n".join(lines)


def orchestrate(args: argparse.Namespace) -> int:
    """Each C measurement in a fresh process, then the traced server; print the report."""
    c: dict[str, dict[str, Any]] = {}
    traced = None
    with tempfile.TemporaryDirectory(prefix="aiotls-memory-") as tmp:
        args.certdir = Path(tmp)
        bench.make_certs(args.certdir)
        for kind in KINDS:
            if (r := child(args, "--role", "measure", "--kind", kind)) is not None:
                c[kind] = r
                print(f"{kind:17} {r['kib_per_object']:5.1f} KiB", file=sys.stderr)
        if args.traced:
            traced = child(args, "--role", "traced")
    print(f"command: `{args.command}`\n\n{args.objects} objects per measurement, each in a "
          f"fresh process after {WARMUP} warm-up ones\n")
    print(report(c, traced))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"command": args.command, "c_memory": c, "traced": traced}, indent=2))
    return 0 if len(c) == len(KINDS) and (traced or not args.traced) else 1


def main(argv: list[str] | None = None) -> int:
    """Parse arguments; dispatch to the orchestrator, or to a child role."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--objects", type=int, default=2000, help="objects per C measurement")
    p.add_argument("--conns", type=int, default=300, help="idle connections traced")
    p.add_argument("--no-traced", dest="traced", action="store_false",
                   help="skip the tracemalloc server")
    p.add_argument("--top", type=int, default=12, help="lines listed for the traced server")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--role", choices=("measure", "traced", "client"), help=argparse.SUPPRESS)
    p.add_argument("--kind", choices=KINDS, help=argparse.SUPPRESS)
    p.add_argument("--certdir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.command = shlex.join(["python", "benchmarks/memory_floor.py",
                               *(sys.argv[1:] if argv is None else argv)])
    if args.role == "measure":
        measure_main(args.kind, args.certdir, args.objects)
    elif args.role == "traced":
        traced_main(args.certdir, args.conns, args.top)
    elif args.role == "client":
        client_main(args.port, args.certdir, args.conns)
    elif args.objects < 1 or args.conns < 1:
        p.error("--objects and --conns must be at least 1")
    else:
        return orchestrate(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
