#!/usr/bin/env python3
"""Side-by-side TLS 1.3 server benchmark: aiotls against asyncio+ssl, uvloop+ssl and Node.js tls.

    python benchmarks/bench.py [--quick] [--repeats N]
                               [--only echo,rr-streams,rr-protocol,hs,hs-resumed,hs-rsa,
                                       hs-resumed-rsa,idle]
                               [--impl asyncio+ssl,uvloop+ssl,node,aiotls,aiotls+uvloop,
                                       aiotls-fallback,aiotls+uvloop-fallback]
                               [--client auto|c|python] [--hs-workers N] [--noise-retries N]
                               [--json out.json] [--results DIR]

Each measurement starts a fresh server process pinned to core 0 and a load-client process
pinned to core 1. The headline figure is server CPU per operation, read from
/proc/<server pid>/stat around the measured window. The table goes to stdout and, with a
chart of every impl against the best peer, to benchmarks/results/. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib
import ipaddress
import json
import os
import platform
import resource
import select
import shlex
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SERVER_NAME = "localhost"
SERVER_CORE, CLIENT_CORE = 0, 1
CHUNK = 64 * 1024
WINDOW = 1024 * 1024
MIB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_LIFETIME = 600.0  # a server process never outlives this, whatever happens to us
READY_TIMEOUT = 30.0
IO_TIMEOUT = 10.0  # per blocking socket operation in the client
NOISY = 0.25  # cores of "other load" in a window above which a cell is measured again

# An impl ending in FALLBACK runs aiotls with AIOTLS_NO_EXTENSIONS=1: its pure-Python data path.
FALLBACK = "-fallback"
IMPLS = ("asyncio+ssl", "uvloop+ssl", "aiotls", "aiotls+uvloop", "node",
         "aiotls-fallback", "aiotls+uvloop-fallback")
PEERS = ("asyncio+ssl", "uvloop+ssl", "node")
# An aiotls impl ending in BASELINE runs the aiotls of another checkout (--baseline DIR), in
# the same run: the before/after of a change, side by side.
BASELINE = "@base"
TARGET = "aiotls+uvloop"
WORKLOADS = ("echo", "rr-streams", "rr-protocol", "hs", "hs-resumed", "hs-rsa",
             "hs-resumed-rsa", "idle")
RR_WORKLOADS = ("rr-streams", "rr-protocol")
HS_WORKLOADS = ("hs", "hs-resumed", "hs-rsa", "hs-resumed-rsa")
RSA = "-rsa"  # a workload ending so runs on the RSA-2048 certificate, others on ECDSA P-256
IDLE_WARMUP_CONNS = 50  # opened and closed before the idle baseline
MAX_LATENCY_SAMPLES = 1_000_000  # per Python rr client run; more than it can do in a window
DEFAULT_RESULTS = REPO_ROOT / "benchmarks" / "results"

# Node's counterpart of the Python servers below: echo (a stream pipe, or a write per 'data'
# event for the Protocol app), or greet with b"x" and wait for EOF.
NODE_SERVER_JS = r"""
const tls = require('tls');
const fs = require('fs');
const [keyPath, certPath, workload, lifetime] = process.argv.slice(2);
const opts = {key: fs.readFileSync(keyPath), cert: fs.readFileSync(certPath), noDelay: true};
const server = tls.createServer(opts, (sock) => {
  sock.on('error', () => {});
  if (workload === 'echo' || workload === 'rr-streams') { sock.pipe(sock); }
  else if (workload === 'rr-protocol') { sock.on('data', (d) => sock.write(d)); }
  else { sock.write('x'); sock.resume(); }
});
server.on('tlsClientError', () => {});
server.listen(0, '127.0.0.1', () => console.log(`READY ${server.address().port} node`));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(3), Number(lifetime) * 1000).unref();
"""


@dataclass(frozen=True)
class Settings:
    """Sizes and durations of one run."""

    repeats: int
    echo_mib: int  # measured bytes echoed over one connection
    echo_warmup_mib: int
    hs_seconds: float  # measured window of the handshake workloads
    hs_warmup: float
    hs_workers: int
    idle_conns: int
    idle_settle: float  # seconds the server gets to settle before each RSS reading
    rr_conns: int  # request/response: connections, each with one request in flight
    rr_bytes: int  # size of a request and of its echo
    rr_seconds: float
    rr_warmup: float


# QUICK is a smoke run of the whole table (7 impls x 8 workloads) in under a minute.
QUICK = Settings(repeats=1, echo_mib=128, echo_warmup_mib=8, hs_seconds=0.4, hs_warmup=0.1,
                 hs_workers=8, idle_conns=1000, idle_settle=0.2, rr_conns=50, rr_bytes=1024,
                 rr_seconds=0.4, rr_warmup=0.1)
# FULL takes about 10 minutes on a quiet machine: medians of 3, as the table.
FULL = Settings(repeats=3, echo_mib=2048, echo_warmup_mib=32, hs_seconds=2.0, hs_warmup=0.5,
                hs_workers=8, idle_conns=1000, idle_settle=0.5, rr_conns=50, rr_bytes=1024,
                rr_seconds=2.0, rr_warmup=0.5)


@dataclass(frozen=True)
class Metric:
    """One row of the result table; `better` is "higher", "lower" or "" (informational)."""

    workload: str
    key: str
    label: str
    better: str
    fmt: str = "{:,.0f}"


METRICS = (
    Metric("echo", "mib_per_cpu_s", "bulk echo: MiB per server CPU-second", "higher"),
    Metric("echo", "cpu_us_per_mib", "bulk echo: server CPU µs per MiB", "lower"),
    Metric("echo", "mib_per_s", "bulk echo: MiB/s (wall)", "higher"),
    Metric("echo", "server_busy", "bulk echo: server core busy", "", "{:.0%}"),
    Metric("echo", "server_sys_share", "bulk echo: server CPU in kernel", "", "{:.0%}"),
    *(metric
      for workload, app in (("rr-streams", "streams app"), ("rr-protocol", "Protocol app"))
      for metric in (
          Metric(workload, "msg_per_cpu_s", f"50 conns x 1 KiB req/resp, {app}: messages "
                 "per server CPU-second", "higher"),
          Metric(workload, "cpu_us_per_msg", f"req/resp, {app}: server CPU µs per message",
                 "lower", "{:,.1f}"),
          Metric(workload, "msg_per_s", f"req/resp, {app}: messages/s (wall)", "higher"),
          Metric(workload, "p50_us", f"req/resp, {app}: p50 latency, µs", "lower"),
          Metric(workload, "p99_us", f"req/resp, {app}: p99 latency, µs", "lower"),
          Metric(workload, "server_busy", f"req/resp, {app}: server core busy", "", "{:.0%}"),
          Metric(workload, "server_sys_share", f"req/resp, {app}: server CPU in kernel", "",
                 "{:.0%}"),
      )),
    Metric("hs", "op_per_cpu_s", "full handshakes per server CPU-second", "higher"),
    Metric("hs", "cpu_us_per_op", "full handshake: server CPU µs", "lower"),
    Metric("hs", "op_per_s", "full handshakes/s (wall)", "higher"),
    Metric("hs", "server_busy", "full handshakes: server core busy", "", "{:.0%}"),
    Metric("hs", "server_sys_share", "full handshakes: server CPU in kernel", "", "{:.0%}"),
    Metric("hs-resumed", "op_per_cpu_s", "resumed handshakes per server CPU-second", "higher"),
    Metric("hs-resumed", "cpu_us_per_op", "resumed handshake: server CPU µs", "lower"),
    Metric("hs-resumed", "op_per_s", "resumed handshakes/s (wall)", "higher"),
    Metric("hs-resumed", "server_busy", "resumed handshakes: server core busy", "", "{:.0%}"),
    Metric("hs-resumed", "resumed_fraction", "resumed handshakes: session_reused", "",
           "{:.0%}"),
    Metric("hs-rsa", "op_per_cpu_s", "full handshakes, RSA-2048, per server CPU-second",
           "higher"),
    Metric("hs-rsa", "cpu_us_per_op", "full handshake, RSA-2048: server CPU µs", "lower"),
    Metric("hs-rsa", "op_per_s", "full handshakes, RSA-2048/s (wall)", "higher"),
    Metric("hs-rsa", "server_busy", "full handshakes, RSA-2048: server core busy", "",
           "{:.0%}"),
    Metric("hs-resumed-rsa", "op_per_cpu_s", "resumed handshakes, RSA-2048, per server "
           "CPU-second", "higher"),
    Metric("hs-resumed-rsa", "cpu_us_per_op", "resumed handshake, RSA-2048: server CPU µs",
           "lower"),
    Metric("hs-resumed-rsa", "op_per_s", "resumed handshakes, RSA-2048/s (wall)", "higher"),
    Metric("hs-resumed-rsa", "server_busy", "resumed handshakes, RSA-2048: server core busy",
           "", "{:.0%}"),
    Metric("hs-resumed-rsa", "resumed_fraction", "resumed handshakes, RSA-2048: "
           "session_reused", "", "{:.0%}"),
    Metric("idle", "kib_per_conn", "idle memory per connection, KiB (server RSS)", "lower",
           "{:,.1f}"),
)


# ---------------------------------------------------------------------------- /proc readers


def process_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) in clock ticks of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]), int(fields[12])  # fields 14 and 15 of stat


def cores_busy_ticks(cores: set[int]) -> int:
    """Ticks the given cores spent running anything (user, nice, system, steal), /proc/stat."""
    total = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
                user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(int, values[:8])
                total += user + nice + system + steal
    return total


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def pin_and_raise_fd_limit(core: int | None) -> None:
    """Pin the calling process to one core and lift its descriptor limit to the hard limit."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------------------- certificates


def make_certs(directory: Path) -> None:
    """Write ca.pem (a P-256 CA) and two leaves for localhost from it: key.pem and chain.pem
    (ECDSA P-256), rsa-key.pem and rsa-chain.pem (RSA-2048)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aiotls bench CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    for prefix, key in (("", ec.generate_private_key(ec.SECP256R1())),
                        ("rsa-", rsa.generate_private_key(65537, 2048))):
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address(HOST))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        (directory / f"{prefix}chain.pem").write_bytes(leaf.public_bytes(pem))
        (directory / f"{prefix}key.pem").write_bytes(key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / "node_server.js").write_text(NODE_SERVER_JS)


def server_cert(certdir: Path, workload: str) -> tuple[Path, Path]:
    """(key, chain) files the server of `workload` runs on."""
    prefix = "rsa-" if workload.endswith(RSA) else ""
    return certdir / f"{prefix}key.pem", certdir / f"{prefix}chain.pem"


# ---------------------------------------------------------------------------- server role


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo everything back until EOF."""
    with contextlib.suppress(Exception):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    writer.close()


async def greet_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send b"x" (so the client sees the handshake done and its tickets), then wait for EOF."""
    with contextlib.suppress(Exception):
        writer.write(b"x")
        await writer.drain()
        while await reader.read(CHUNK):
            pass
    writer.close()


StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class EchoProtocol(asyncio.Protocol):
    """The Protocol app: every received chunk goes straight back (data_received -> write)."""

    transport: asyncio.WriteTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)  # uvloop's subclasses neither

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def start_app_server(impl: str, workload: str, certdir: Path,
                           greet: StreamHandler | None = None) -> Any:
    """Listen on HOST (port 0) with `workload`'s server app over `impl`'s TLS stack.

    rr-protocol gets EchoProtocol; echo and rr-streams the streams echo_handler; the
    handshake and idle workloads greet_handler, or `greet` (profile_hs.py counts with it).
    """
    handler = echo_handler if workload in ("echo", "rr-streams") else greet or greet_handler
    key, chain = server_cert(certdir, workload)
    if impl.startswith("aiotls"):
        aiotls: Any = importlib.import_module("aiotls")
        ctx = aiotls.create_secure_context(key=key.read_text(), cert=chain.read_text())
        if workload == "rr-protocol":
            return await aiotls.create_server(EchoProtocol, HOST, 0, context=ctx)
        return await aiotls.start_server(handler, HOST, 0, context=ctx)
    sslctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sslctx.load_cert_chain(chain, key)
    if workload == "rr-protocol":
        return await asyncio.get_running_loop().create_server(EchoProtocol, HOST, 0, ssl=sslctx)
    return await asyncio.start_server(handler, HOST, 0, ssl=sslctx)


def data_path(impl: str) -> str | None:
    """Which aiotls data path this process ran: "compiled" once aiotls._speedups is loaded."""
    if not impl.startswith("aiotls"):
        return None
    return "compiled" if "aiotls._speedups" in sys.modules else "python"


async def serve(impl: str, workload: str, certdir: Path) -> None:
    """Run one server until stdin reaches EOF; print "READY <port>" once listening.

    On the way out it prints "DATAPATH <compiled|python>" for the aiotls impls.
    """
    loop = asyncio.get_running_loop()
    errors = 0

    def quiet(_loop: asyncio.AbstractEventLoop, _context: dict[str, Any]) -> None:
        nonlocal errors  # connection errors are expected noise; logging them would cost CPU
        errors += 1

    loop.set_exception_handler(quiet)
    server = await start_app_server(impl, workload, certdir)
    stop = loop.create_future()

    def on_stdin() -> None:
        if not os.read(0, 4096) and not stop.done():
            stop.set_result(None)

    loop.add_reader(0, on_stdin)
    loop.call_later(SERVER_LIFETIME, lambda: None if stop.done() else stop.set_result(None))
    kind = f"{type(loop).__module__}.{type(loop).__name__}"
    print(f"READY {server.sockets[0].getsockname()[1]} {kind}", flush=True)
    try:
        await stop
    finally:
        loop.remove_reader(0)
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2.0)
        if path := data_path(impl):
            print(f"DATAPATH {path}", flush=True)
        print(f"server exiting; {errors} loop exception(s) swallowed", file=sys.stderr)


def server_main(impl: str, workload: str, certdir: Path, tree: Path | None = None) -> None:
    """Entry point of the server process (already pinned by the parent); ``tree`` is the
    checkout whose aiotls it imports (default: this one)."""
    sys.path.insert(0, str(tree or REPO_ROOT))  # ahead of an editable install's finder
    if tree is not None and tree.resolve() != REPO_ROOT:
        # ... which would otherwise fill in, from this checkout, what that one lacks
        sys.meta_path[:] = [f for f in sys.meta_path
                            if not getattr(f, "__module__", "").startswith("__editable__")]
    if "uvloop" in impl:
        import uvloop

        uvloop.run(serve(impl, workload, certdir))
    else:
        asyncio.run(serve(impl, workload, certdir))


# ---------------------------------------------------------------------------- client role


def client_context(certdir: Path) -> ssl.SSLContext:
    """A verifying TLS 1.3-only client context that trusts the bench CA."""
    ctx = ssl.create_default_context(cafile=str(certdir / "ca.pem"))
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    return ctx


class Window:
    """Samples CPU ticks and the wall clock at the start and end of a measured window.

    Besides the server's own ticks it counts what else ran on the server's and the client's
    cores ("other load", in cores): on a shared machine that is the noise to watch.
    """

    def __init__(self, server_pid: int, client_pid: int) -> None:
        self.pids = (server_pid, client_pid)
        self.cores = os.sched_getaffinity(server_pid) | os.sched_getaffinity(client_pid)
        self.ticks: list[tuple[int, int, int, int]] = []
        self.times: list[float] = []

    def _sample(self) -> None:
        server, client = (process_ticks(pid) for pid in self.pids)
        self.ticks.append((*server, sum(client), cores_busy_ticks(self.cores)))
        self.times.append(time.perf_counter())

    start = stop = _sample

    def rates(self, count: float, unit: str) -> dict[str, float]:
        """unit/s wall, server CPU µs per unit, units per server CPU-second, and context."""
        (u0, s0, c0, b0), (u1, s1, c1, b1) = self.ticks[0], self.ticks[-1]
        user, sys_ = (u1 - u0) / CLK_TCK, (s1 - s0) / CLK_TCK
        wall = self.times[-1] - self.times[0]
        cpu = max(user + sys_, 1.0 / CLK_TCK)  # never divide by a zero tick count
        other = ((b1 - b0) - (u1 - u0) - (s1 - s0) - (c1 - c0)) / CLK_TCK / wall
        return {f"{unit}_per_s": count / wall, f"cpu_us_per_{unit}": cpu * 1e6 / count,
                f"{unit}_per_cpu_s": count / cpu, "server_busy": cpu / wall,
                "server_sys_share": sys_ / cpu, "client_busy": (c1 - c0) / CLK_TCK / wall,
                "other_load": max(other, 0.0), "server_user_s": user, "server_sys_s": sys_,
                "wall_s": wall, "count": count}


async def echo_client(port: int, pid: int, ctx: ssl.SSLContext, s: Settings) -> dict[str, Any]:
    """One connection; pipelined 64 KiB writes with at most WINDOW bytes in flight."""
    reader, writer = await asyncio.open_connection(HOST, port, ssl=ctx,
                                                   server_hostname=SERVER_NAME)
    chunk = os.urandom(CHUNK)

    async def transfer(n_chunks: int) -> None:
        total, sent, received = n_chunks * CHUNK, 0, 0
        room = asyncio.Event()

        async def drain_echo() -> None:
            nonlocal received
            while received < total:
                data = await reader.read(WINDOW)
                if not data:
                    raise ConnectionError(f"server closed after {received} of {total} bytes")
                received += len(data)
                room.set()

        reading = asyncio.create_task(drain_echo())
        try:
            for _ in range(n_chunks):
                while sent - received >= WINDOW and not reading.done():
                    room.clear()
                    waiter = asyncio.ensure_future(room.wait())
                    await asyncio.wait([reading, waiter], return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                if reading.done():
                    break
                writer.write(chunk)
                sent += CHUNK
                await writer.drain()
            await reading
        finally:
            reading.cancel()

    cipher = writer.get_extra_info("cipher")
    await transfer(s.echo_warmup_mib * MIB // CHUNK)
    window = Window(pid, os.getpid())
    window.start()
    await transfer(s.echo_mib * MIB // CHUNK)
    window.stop()
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 2.0)
    return {**window.rates(s.echo_mib, "mib"), "cipher": cipher[0] if cipher else None,
            "client": "Python ssl, uvloop"}


def percentiles_us(latencies: list[float]) -> dict[str, float]:
    """p50, p99 and max of request latencies (seconds), in µs, as loadclient.c reports them."""
    ordered = sorted(latencies) or [0.0]
    return {"p50_us": ordered[len(ordered) // 2] * 1e6,
            "p99_us": ordered[int(len(ordered) * 0.99)] * 1e6, "max_us": ordered[-1] * 1e6}


async def rr_client(port: int, pid: int, ctx: ssl.SSLContext, s: Settings) -> dict[str, Any]:
    """rr_conns connections; each sends rr_bytes, awaits the whole echo, and sends again."""
    request = os.urandom(s.rr_bytes)
    conns = [await asyncio.open_connection(HOST, port, ssl=ctx, server_hostname=SERVER_NAME)
             for _ in range(s.rr_conns)]
    done = 0
    latencies: list[float] = []
    measuring = False

    async def requests(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal done
        while True:
            sent_at = time.perf_counter()
            writer.write(request)
            await reader.readexactly(len(request))
            done += 1
            if measuring and len(latencies) < MAX_LATENCY_SAMPLES:
                latencies.append(time.perf_counter() - sent_at)

    tasks = [asyncio.create_task(requests(*conn)) for conn in conns]
    try:
        # a task only ends by failing: FIRST_EXCEPTION cuts a window short and reports it
        await asyncio.wait(tasks, timeout=s.rr_warmup, return_when=asyncio.FIRST_EXCEPTION)
        window = Window(pid, os.getpid())
        done0, measuring = done, True
        window.start()
        await asyncio.wait(tasks, timeout=s.rr_seconds, return_when=asyncio.FIRST_EXCEPTION)
        window.stop()
        count = done - done0
        if failed := [t.exception() for t in tasks if t.done()]:
            raise RuntimeError(f"a request/response connection failed: {failed[0]!r}")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, writer in conns:
            writer.close()
    cipher = conns[0][1].get_extra_info("cipher")
    return {**window.rates(count, "msg"), **percentiles_us(latencies),
            "cipher": cipher[0] if cipher else None, "client": "Python ssl, uvloop"}


def tls_connect(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None) -> ssl.SSLSocket:
    """Connect, handshake and read the server's b"x"; the caller closes the socket."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        raw.settimeout(IO_TIMEOUT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.connect((HOST, port))
        tls = ctx.wrap_socket(raw, server_hostname=SERVER_NAME, session=session)
    except BaseException:
        raw.close()
        raise
    try:
        if tls.recv(1) != b"x":
            raise ConnectionError("server did not greet with b'x'")
    except BaseException:
        tls.close()
        raise
    return tls


def session_with_ticket(tls: ssl.SSLSocket, timeout: float) -> ssl.SSLSession | None:
    """The connection's session, once it holds a ticket: Node sends its tickets after b"x".

    Reading `tls.session` serialises the session (about 0.3 ms here), so read it sparingly.
    """
    session = tls.session
    if session is None or session.has_ticket or timeout <= 0:
        return session
    deadline = time.monotonic() + timeout
    tls.setblocking(False)
    try:
        while (session and not session.has_ticket
               and (remaining := deadline - time.monotonic()) > 0):
            select.select([tls], [], [], remaining)
            with contextlib.suppress(ssl.SSLWantReadError):
                if not tls.recv(1024):
                    break
            session = tls.session
    finally:
        tls.settimeout(IO_TIMEOUT)
    return session


def handshake_client(port: int, pid: int, ctx: ssl.SSLContext, s: Settings,
                     resume: bool) -> dict[str, Any]:
    """hs_workers threads connect, handshake, read b"x" and close, over and over."""
    stop = threading.Event()
    done, reused, failed = [0] * s.hs_workers, [0] * s.hs_workers, [0] * s.hs_workers
    first_error: list[str] = []
    cipher: list[str] = []
    deadline = time.monotonic() + s.hs_warmup + s.hs_seconds + 30.0

    def worker(i: int) -> None:
        session: ssl.SSLSession | None = None
        wait = 1.0  # for a first ticket; 0 once a server is seen sending none
        while not stop.is_set() and time.monotonic() < deadline and failed[i] < 100:
            try:
                with tls_connect(port, ctx, session) as tls:
                    if resume:  # offer the newest ticket, as real clients do
                        reused[i] += bool(tls.session_reused)
                        fresh = session_with_ticket(tls, wait if session is None else 0.0)
                        if fresh is not None and fresh.has_ticket:
                            session = fresh
                        elif session is None:
                            wait = 0.0  # this server sends no tickets
                    if not cipher and (negotiated := tls.cipher()):
                        cipher.append(negotiated[0])
                done[i] += 1
            except OSError as exc:
                failed[i] += 1
                first_error.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.01)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(s.hs_workers)]
    for t in threads:
        t.start()
    try:
        time.sleep(s.hs_warmup)
        window = Window(pid, os.getpid())
        ops0, reused0 = sum(done), sum(reused)
        window.start()
        time.sleep(s.hs_seconds)
        window.stop()
        ops, n_reused = sum(done) - ops0, sum(reused) - reused0
    finally:
        stop.set()
        for t in threads:
            t.join(IO_TIMEOUT * 3)
    if ops == 0:
        raise RuntimeError(f"no handshakes completed; first error: {first_error[:1]}")
    return {**window.rates(ops, "op"), "resumed_fraction": n_reused / ops,
            "failures": sum(failed), "first_error": first_error[:1],
            "cipher": cipher[0] if cipher else None, "client": "Python ssl, threads"}


C_CLIENT = "loadclient.c (GnuTLS)"


def gnutls_cipher(description: str) -> str:
    """GnuTLS's "(TLS1.3)-(ECDHE-X25519)-..." session description, space-separated."""
    return " ".join(description.strip("()").split(")-("))


def c_client_window(cmd: list[str], pid: int,
                    timeout: float) -> tuple[Window, list[int], dict[str, Any]]:
    """Run loadclient.c; time the server between its WINDOW line and its JSON totals.

    Returns the window, the counts on the WINDOW line (done, resumed) and the totals.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(timeout, proc.kill)  # only the process we started
    watchdog.start()
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        marker = first.split()  # "WINDOW <count> <resumed>"
        if not marker or marker[0] != "WINDOW":
            raise RuntimeError(f"loadclient failed before its window: "
                               f"{first + proc.stdout.read()!r}")
        window = Window(pid, proc.pid)
        window.start()
        totals = proc.stdout.readline()
        window.stop()
        if not totals:
            raise RuntimeError("loadclient died in its window")
        result: dict[str, Any] = json.loads(totals)
        proc.wait(IO_TIMEOUT)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait(IO_TIMEOUT)
    result["cipher"] = gnutls_cipher(result["cipher"])
    if result["first_error"] and result["failures"]:
        result["first_error"] = [result["first_error"]]
    return window, [int(n) for n in marker[1:]], result


def handshake_client_c(binary: Path, port: int, pid: int, certdir: Path, s: Settings,
                       resume: bool) -> dict[str, Any]:
    """Handshake workloads with loadclient.c."""
    cmd = [str(binary), "resume" if resume else "hs", str(port), str(certdir / "ca.pem"),
           str(s.hs_workers), str(s.hs_warmup), str(s.hs_seconds)]
    window, (ops0, reused0), result = c_client_window(cmd, pid,
                                                      s.hs_warmup + s.hs_seconds + 30.0)
    ops = result["count"] - ops0
    if ops <= 0:
        raise RuntimeError(f"no handshakes completed; first error: {result['first_error']}")
    return {**window.rates(ops, "op"), "resumed_fraction": (result["reused"] - reused0) / ops,
            "failures": result["failures"], "first_error": result["first_error"] or None,
            "cipher": result["cipher"], "client": C_CLIENT}


def echo_client_c(binary: Path, port: int, pid: int, certdir: Path,
                  s: Settings) -> dict[str, Any]:
    """Bulk echo with loadclient.c."""
    cmd = [str(binary), "echo", str(port), str(certdir / "ca.pem"), str(s.echo_warmup_mib),
           str(s.echo_mib)]
    window, (bytes0, _), result = c_client_window(cmd, pid, client_timeout("echo", s))
    if result["failures"]:
        raise RuntimeError(f"echo failed: {result['first_error']}")
    mib = (result["count"] - bytes0) / MIB
    return {**window.rates(mib, "mib"), "cipher": result["cipher"], "client": C_CLIENT}


def rr_client_c(binary: Path, port: int, pid: int, certdir: Path,
                s: Settings) -> dict[str, Any]:
    """Request/response with loadclient.c."""
    cmd = [str(binary), "rr", str(port), str(certdir / "ca.pem"), str(s.rr_conns),
           str(s.rr_bytes), str(s.rr_warmup), str(s.rr_seconds)]
    window, (msgs0, _), result = c_client_window(cmd, pid, client_timeout("rr-streams", s))
    if result["failures"]:
        raise RuntimeError(f"request/response failed: {result['first_error']}")
    return {**window.rates(result["count"] - msgs0, "msg"), "p50_us": result["p50_us"],
            "p99_us": result["p99_us"], "max_us": result["max_us"],
            "cipher": result["cipher"], "client": C_CLIENT}


def idle_client(port: int, pid: int, ctx: ssl.SSLContext, s: Settings) -> dict[str, Any]:
    """Open idle_conns greeted connections and report the server's RSS growth per connection."""
    def open_many(n: int) -> list[ssl.SSLSocket]:
        per_thread: list[list[ssl.SSLSocket]] = [[] for _ in range(s.hs_workers)]
        errors: list[BaseException] = []

        def worker(i: int) -> None:
            try:
                for _ in range(i, n, s.hs_workers):
                    per_thread[i].append(tls_connect(port, ctx, None))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,), daemon=True)
                   for i in range(s.hs_workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(IO_TIMEOUT * n)
        socks = [sock for group in per_thread for sock in group]
        if errors or len(socks) != n:
            close_all(socks)
            raise RuntimeError(f"opened {len(socks)} of {n} connections: {errors[:1]}")
        return socks

    def close_all(socks: list[ssl.SSLSocket]) -> None:
        for sock in socks:
            sock.close()

    close_all(open_many(IDLE_WARMUP_CONNS))  # warm up allocator pools and caches first
    time.sleep(s.idle_settle)
    before = rss_kib(pid)
    socks = open_many(s.idle_conns)
    try:
        time.sleep(s.idle_settle)  # let the server settle (handlers parked in read)
        after = rss_kib(pid)
    finally:
        close_all(socks)
    return rss_growth(before, after, s)


def rss_growth(before: int, after: int, s: Settings) -> dict[str, Any]:
    """The idle result: the server's RSS growth (KiB) per idle connection."""
    return {"kib_per_conn": (after - before) / s.idle_conns, "rss_before_kib": before,
            "rss_after_kib": after, "conns": s.idle_conns}


def run_fast(main: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run a Python load client on uvloop when it is installed (it keeps up better)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def client_main(workload: str, port: int, pid: int, certdir: Path, s: Settings,
                loadclient: Path | None) -> None:
    """Entry point of the load-client process: run one workload, print its result as JSON."""
    ctx = client_context(certdir)
    if workload == "echo" and loadclient:
        result = echo_client_c(loadclient, port, pid, certdir, s)
    elif workload == "echo":
        result = run_fast(echo_client(port, pid, ctx, s))
    elif workload in RR_WORKLOADS and loadclient:
        result = rr_client_c(loadclient, port, pid, certdir, s)
    elif workload in RR_WORKLOADS:
        result = run_fast(rr_client(port, pid, ctx, s))
    elif workload in HS_WORKLOADS and loadclient:
        result = handshake_client_c(loadclient, port, pid, certdir, s,
                                    workload.startswith("hs-resumed"))
    elif workload in HS_WORKLOADS:
        result = handshake_client(port, pid, ctx, s, resume=workload.startswith("hs-resumed"))
    else:
        result = idle_client(port, pid, ctx, s)
    print(json.dumps(result))


# ---------------------------------------------------------------------------- orchestration


def client_timeout(workload: str, s: Settings) -> float:
    """Hard wall-clock limit for one client run."""
    if workload == "echo":
        return 60.0 + (s.echo_mib + s.echo_warmup_mib) / 5.0  # even at 5 MiB/s
    if workload == "idle":
        return 60.0 + s.idle_conns / 20.0
    if workload in RR_WORKLOADS:
        return 60.0 + s.rr_warmup + s.rr_seconds + s.rr_conns / 20.0
    return 60.0 + s.hs_warmup + s.hs_seconds


def preexec(core: int | None) -> Callable[[], None]:
    """A preexec_fn pinning the child to `core` (None: no pinning)."""
    return lambda: pin_and_raise_fd_limit(core)


def build_loadclient(dest: Path) -> tuple[Path | None, str]:
    """Compile loadclient.c (needs cc and GnuTLS headers); (binary or None, why not)."""
    source = Path(__file__).resolve().parent / "loadclient.c"
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc or not source.exists():
        return None, "no C compiler" if not cc else f"{source} missing"
    libs = ["-lgnutls"]
    if shutil.which("pkg-config"):
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "gnutls"],
                               capture_output=True, text=True, timeout=60, check=False)
        libs = flags.stdout.split() if flags.returncode == 0 else libs
    binary = dest / "loadclient"
    proc = subprocess.run([cc, "-O2", "-pthread", "-o", str(binary), str(source), *libs],
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        return None, f"cc failed: {proc.stderr.strip().splitlines()[-1:]}"
    return binary, ""


def run_cell(impl: str, workload: str, certdir: Path, s: Settings,
             cores: tuple[int | None, int | None], loadclient: Path | None,
             baseline: Path | None = None) -> dict[str, Any]:
    """Start a fresh server, run one client against it, stop the server; return the result."""
    me = [sys.executable, str(Path(__file__).resolve())]
    tree = REPO_ROOT
    if impl.endswith(BASELINE):
        assert baseline is not None, f"{impl} needs --baseline"
        tree, impl = baseline, impl.removesuffix(BASELINE)
    if impl == "node":
        cmd = ["node", str(certdir / "node_server.js"), *map(str, server_cert(certdir, workload)),
               workload, str(SERVER_LIFETIME)]
    else:
        cmd = [*me, "--role", "server", "--impl", impl, "--workload", workload,
               "--certdir", str(certdir), "--tree", str(tree)]
    env = {k: v for k, v in os.environ.items() if k != "AIOTLS_NO_EXTENSIONS"}
    if impl.endswith(FALLBACK):
        env["AIOTLS_NO_EXTENSIONS"] = "1"
    log = certdir / f"{impl}-{workload}.log"
    with open(log, "ab") as logf:
        server = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=logf, preexec_fn=preexec(cores[0]), cwd=tree,
                                  env=env)
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], READY_TIMEOUT)
        line = server.stdout.readline().decode() if ready else ""
        if not line.startswith("READY "):
            raise RuntimeError(f"server did not start ({line!r})")
        _, port_text, server_loop = line.split()
        port = int(port_text)
        client = subprocess.run(
            [*me, "--role", "client", "--workload", workload, "--port", str(port),
             "--server-pid", str(server.pid), "--certdir", str(certdir),
             "--settings", json.dumps(asdict(s)), "--loadclient", str(loadclient or "")],
            capture_output=True, timeout=client_timeout(workload, s),
            preexec_fn=preexec(cores[1]), cwd=REPO_ROOT, check=False)
        if client.returncode != 0:
            tail = client.stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError(f"client failed: {tail}")
        result: dict[str, Any] = {**json.loads(client.stdout), "server_loop": server_loop}
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}")
        assert server.stdin is not None
        server.stdin.close()  # EOF: the server's cue to exit, naming its data path on the way
        with contextlib.suppress(subprocess.TimeoutExpired):  # too slow: killed below
            server.wait(10)
            for line in server.stdout.read().decode().splitlines():
                if line.startswith("DATAPATH "):
                    result["data_path"] = line.split()[1]
        return result
    except Exception as exc:
        server_tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{exc}; server stderr: {server_tail}") from exc
    finally:
        if server.stdin is not None:
            with contextlib.suppress(OSError):
                server.stdin.close()  # EOF on stdin is the server's cue to exit
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()  # only the process we started, by its pid
            server.wait(10)
        if server.stdout is not None:
            server.stdout.close()


def aiotls_problem() -> str | None:
    """Why the aiotls impls cannot run (None if they can), checked in a throwaway process."""
    code = "import aiotls; aiotls.start_server; aiotls.create_secure_context"
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                              cwd=REPO_ROOT, check=False)
    except subprocess.TimeoutExpired:
        return "import timed out"
    if proc.returncode == 0:
        return None
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"


def available_impls(wanted: Sequence[str]) -> list[str]:
    """Drop (with a message) the impls that cannot run here."""
    problem = aiotls_problem() if any(i.startswith("aiotls") for i in wanted) else None
    usable = []
    for impl in wanted:
        if impl.startswith("aiotls") and problem:
            print(f"{impl}: skipped: aiotls not importable: {problem}", file=sys.stderr)
        elif impl == "node" and not shutil.which("node"):
            print("node: skipped: no `node` on PATH", file=sys.stderr)
        elif "uvloop" in impl and not _has_module("uvloop"):
            print(f"{impl}: skipped: uvloop not installed", file=sys.stderr)
        else:
            usable.append(impl)
    return usable


def _has_module(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def choose_cores() -> tuple[int | None, int | None]:
    """(server core, client core), or no pinning when fewer than two cores are available."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("warning: fewer than 2 usable cores; running unpinned", file=sys.stderr)
        return None, None
    if {SERVER_CORE, CLIENT_CORE} <= set(cpus):
        return SERVER_CORE, CLIENT_CORE
    return cpus[0], cpus[1]


# ---------------------------------------------------------------------------- reporting


Runs = dict[str, dict[str, list[dict[str, Any]]]]  # impl -> workload -> one result per repeat


def is_noisy(result: dict[str, Any]) -> bool:
    """Whether other load spoiled this measurement's window."""
    return bool(result.get("other_load", 0.0) > NOISY)


def usable(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The repeats to summarise: the quiet ones, if they are at least half of them."""
    quiet = [r for r in results if not is_noisy(r)]
    return quiet if quiet and 2 * len(quiet) >= len(results) else results


def median_of(runs: Runs, impl: str, m: Metric) -> tuple[float, float] | None:
    """(median, relative half-spread) of a metric over the usable repeats."""
    values = [r[m.key] for r in usable(runs.get(impl, {}).get(m.workload, [])) if m.key in r]
    if not values:
        return None
    med = statistics.median(values)
    spread = (max(values) - min(values)) / 2 / med if med else 0.0
    return med, spread


def versus_best_peer(runs: Runs, impls: Sequence[str], impl: str,
                     m: Metric) -> dict[str, Any] | None:
    """`impl` against the best peer on one metric; ratio > 1 means `impl` is better."""
    target = median_of(runs, impl, m)
    scored = [(v[0], p) for p in PEERS if p in impls and (v := median_of(runs, p, m))]
    if not m.better or not target or not scored or not target[0]:
        return None
    best, peer = (max if m.better == "higher" else min)(scored)
    ratio = target[0] / best if m.better == "higher" else best / target[0]
    return {"label": m.label, "ratio": ratio, "best_peer": peer, "best_peer_value": best,
            "target_value": target[0]}


def ratios(runs: Runs, impls: Sequence[str], target: str = TARGET) -> dict[str, dict[str, Any]]:
    """`target` against the best peer per metric; ratio > 1 means `target` is better."""
    out: dict[str, dict[str, Any]] = {}
    for m in METRICS:
        if m.key.startswith("cpu_us_per_"):
            continue  # the reciprocal of the per-CPU-second row: same ratio
        if r := versus_best_peer(runs, impls, target, m):
            out[f"{m.workload}.{m.key}"] = r
    return out


def markdown(runs: Runs, impls: Sequence[str], workloads: Sequence[str],
             errors: dict[str, list[str]]) -> str:
    """The result table (medians, ± half the min-max spread) plus ratios and notes."""
    arrows = {"higher": " (↑)", "lower": " (↓)", "": ""}
    lines = ["| metric | " + " | ".join(impls) + " |", "|---|" + "---:|" * len(impls)]
    for m in METRICS:
        if m.workload not in workloads:
            continue
        cells = []
        for impl in impls:
            v = median_of(runs, impl, m)
            if v is None:
                cells.append("error" if errors.get(f"{impl}/{m.workload}") else "-")
            else:
                spread = f" ±{v[1]:.0%}" if m.better and v[1] >= 0.005 else ""
                cells.append(m.fmt.format(v[0]) + spread)
        lines.append(f"| {m.label}{arrows[m.better]} | " + " | ".join(cells) + " |")
    for key, label, order in (
            ("cipher", "negotiated (first of hs, hs-resumed, echo, rr)",
             ("hs", "hs-resumed", "echo", *RR_WORKLOADS)),
            ("cipher", "negotiated with RSA-2048", ("hs-rsa", "hs-resumed-rsa")),
            ("server_loop", "server event loop", WORKLOADS),
            ("data_path", "aiotls data path (compiled: aiotls._speedups loaded)", WORKLOADS)):
        seen = [next((str(r[key]) for w in order
                      for r in runs.get(impl, {}).get(w, []) if r.get(key)), "-")
                for impl in impls]
        if any(v != "-" for v in seen):
            lines.append(f"| {label} | " + " | ".join(seen) + " |")
    out = "\n".join(lines) + headline(runs, impls)
    out += versus_baselines(runs, impls)
    for target in (TARGET, TARGET + FALLBACK):
        if target in impls and (rs := ratios(runs, impls, target)):
            out += f"\n\n{target} vs the best peer (> 1.00 means {target} is better):\n\n"
            out += "\n".join(f"- {r['label']}: x{r['ratio']:.2f} (best peer {r['best_peer']})"
                             for r in rs.values())
    dropped = sum(len(w) - len(usable(w)) for i in impls for w in runs.get(i, {}).values())
    if dropped:
        out += (f"\n\n{dropped} repeat(s) with > {NOISY} cores of other load left out of the "
                "medians (see the JSON)")
    for cell, msgs in errors.items():
        out += f"\n\nerrors in {cell}: " + "; ".join(msgs[:3])
    return out


def versus_baselines(runs: Runs, impls: Sequence[str]) -> str:
    """Each aiotls impl against its BASELINE twin, per metric (> 1 means this checkout is
    better); empty without baseline impls."""
    pairs = [(i, i + BASELINE) for i in impls if i + BASELINE in impls]
    rows = []
    for m in METRICS:
        if not m.better or m.key.startswith("cpu_us_per_"):
            continue
        cells = []
        for now, base in pairs:
            a, b = median_of(runs, now, m), median_of(runs, base, m)
            ratio = None if not a or not b or not a[0] or not b[0] else (
                a[0] / b[0] if m.better == "higher" else b[0] / a[0])
            cells.append("-" if ratio is None else f"x{ratio:.2f}")
        if any(c != "-" for c in cells):
            rows.append(f"| {m.label} | " + " | ".join(cells) + " |")
    if not rows:
        return ""
    return ("\n\nThis checkout against the baseline (> 1.00 means this one is better):\n\n"
            "| metric | " + " | ".join(f"{now} vs {base}" for now, base in pairs) + " |\n|---|"
            + "---:|" * len(pairs) + "\n" + "\n".join(rows))


def headline(runs: Runs, impls: Sequence[str]) -> str:
    """The issue's summary table: per workload, the aiotls impls against the best peer."""
    targets = [t for t in (TARGET, TARGET + FALLBACK) if t in impls]
    rows = []
    for m in METRICS:
        if (m.workload, m.key) not in CHART_ROWS:
            continue
        found = [versus_best_peer(runs, impls, t, m) for t in targets]
        if not any(found):
            continue
        best = next(f for f in found if f)
        rows.append(f"| {m.label} | " + " | ".join(
            m.fmt.format(f["target_value"]) if f else "-" for f in found)
            + f" | {m.fmt.format(best['best_peer_value'])} ({best['best_peer']}) | "
            + " | ".join(f"x{f['ratio']:.2f}" if f else "-" for f in found) + " |")
    if not rows:
        return ""
    return ("\n\n| workload | " + " | ".join(targets) + " | best peer | "
            + " | ".join(f"{t} vs best peer" for t in targets) + " |\n|---|"
            + "---:|" * (2 * len(targets) + 1) + "\n" + "\n".join(rows))


def environment() -> dict[str, Any]:
    """What this run ran on."""
    node = shutil.which("node")
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True,
                                  timeout=30, check=False).stdout.strip() if node else None
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.processor())
    return {"python": platform.python_version(), "openssl": ssl.OPENSSL_VERSION,
            "uvloop": getattr(__import__("uvloop"), "__version__", None)
            if _has_module("uvloop") else None,
            "node": node_version, "kernel": platform.release(), "cpu": cpu,
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


# The headline row of each workload, and its name under the chart's bars.
CHART_ROWS = {("echo", "mib_per_cpu_s"): "bulk echo",
              ("rr-streams", "msg_per_cpu_s"): "1 KiB req/resp\nstreams app",
              ("rr-protocol", "msg_per_cpu_s"): "1 KiB req/resp\nProtocol app",
              ("hs", "op_per_cpu_s"): "full handshakes\nECDSA P-256",
              ("hs-resumed", "op_per_cpu_s"): "resumed\nECDSA P-256",
              ("hs-rsa", "op_per_cpu_s"): "full handshakes\nRSA-2048",
              ("hs-resumed-rsa", "op_per_cpu_s"): "resumed\nRSA-2048",
              ("idle", "kib_per_conn"): "idle memory\nper connection"}


def chart(runs: Runs, impls: Sequence[str], title: str, path: Path) -> str | None:
    """Save grouped bars of every impl against the best peer per workload as a PNG.

    Returns None once saved, or why there is no chart (no matplotlib, nothing to compare).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    rows = [(m, CHART_ROWS[(m.workload, m.key)]) for m in METRICS
            if (m.workload, m.key) in CHART_ROWS
            and any(versus_best_peer(runs, impls, i, m) for i in impls)]
    if not rows:
        return "no workload with both a peer and a result to compare"
    fig, ax = plt.subplots(figsize=(max(8.0, 1.9 * len(rows)), 5.0))
    width = 0.85 / len(impls)
    ordered = [i for i in impls if i in PEERS] + [i for i in impls if i not in PEERS]
    for n, impl in enumerate(ordered):
        xs = [x + (n - (len(impls) - 1) / 2) * width for x in range(len(rows))]
        vs = [(r or {}).get("ratio", 0.0) for r in
              (versus_best_peer(runs, impls, impl, m) for m, _ in rows)]
        bars = ax.bar(xs, vs, width, label=impl)
        ax.bar_label(bars, labels=[f"{v:.2f}" if v else "" for v in vs], fontsize=6,
                     rotation=90, padding=2)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.axhline(1.2, color="green", linestyle=":", linewidth=1, label="1.2x the best peer")
    ax.set_xticks(range(len(rows)), [label for _, label in rows], fontsize=8)
    ax.set_ylabel("vs the best of " + ", ".join(p for p in PEERS if p in impls)
                  + "  (> 1: better)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncols=2)
    ax.margins(y=0.15)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return None


def save_results(directory: Path, report: str, runs: Runs, impls: Sequence[str],
                 title: str) -> tuple[Path, str | None]:
    """Write <timestamp>.md (the report) and <timestamp>.png (the chart) into `directory`.

    Returns the markdown path and why there is no chart (None when there is one).
    """
    directory.mkdir(parents=True, exist_ok=True)
    stem = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    png = directory / f"{stem}.png"
    no_chart = chart(runs, impls, title, png)
    md = directory / f"{stem}.md"
    md.write_text(report + (f"\n\n![{title}]({png.name})\n" if no_chart is None
                            else f"\n\n(no chart: {no_chart})\n"))
    return md, no_chart


def orchestrate(args: argparse.Namespace) -> int:
    """Run every (repeat, workload, impl) cell, interleaved, and print the report."""
    base = QUICK if args.quick else FULL
    s = Settings(**{**asdict(base), "repeats": args.repeats or base.repeats,
                    "hs_workers": args.hs_workers or base.hs_workers})
    workloads = [w for w in WORKLOADS if w in args.only.split(",")]
    impls = available_impls([i for i in args.impl.split(",") if i])
    if not impls or not workloads:
        print("nothing to run", file=sys.stderr)
        return 2
    cores = choose_cores()
    if cores[1] is not None:
        os.sched_setaffinity(0, {cores[1]})  # keep this (mostly idle) process off the server core
    retries = args.noise_retries if args.noise_retries >= 0 else 0 if args.quick else 2
    env = environment()
    print(f"# {', '.join(f'{k} {v}' for k, v in env.items())}", file=sys.stderr)
    runs: Runs = {i: {w: [] for w in workloads} for i in impls}
    errors: dict[str, list[str]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aiotls-bench-") as tmp:
        certdir = Path(tmp)
        make_certs(certdir)
        loadclient, why = build_loadclient(certdir) if args.client != "python" else (None, "")
        if loadclient is None and args.client == "c":
            print(f"cannot build the C load client: {why}", file=sys.stderr)
            return 2
        if why:
            print(f"note: C load client unavailable ({why}); using Python ssl", file=sys.stderr)
        env["client"] = (f"{C_CLIENT} for echo, request/response and handshakes, Python ssl "
                         "for idle" if loadclient
                         else "Python ssl (uvloop for echo and request/response, threads "
                         "otherwise)")
        for rep in range(1, s.repeats + 1):
            for workload in workloads:
                for impl in impls:
                    tag = f"[{rep}/{s.repeats}] {workload:14} {impl:22}"
                    cell_started = time.monotonic()
                    try:
                        result = measure(impl, workload, certdir, s, cores, loadclient,
                                         retries, tag, args.baseline)
                    except Exception as exc:
                        errors.setdefault(f"{impl}/{workload}", []).append(str(exc))
                        print(f"{tag} ERROR {exc}", file=sys.stderr)
                        continue
                    runs[impl][workload].append(result)
                    print(f"{tag} {brief(result)} [{time.monotonic() - cell_started:.1f} s]",
                          file=sys.stderr)
        report = markdown(runs, impls, workloads, errors)
    elapsed = time.monotonic() - started
    loads = [r["other_load"] for i in runs.values() for w in i.values() for r in w
             if "other_load" in r]
    header = [f"command: `{args.command}`", "",
              "; ".join(f"{k} {v}" for k, v in env.items() if k != "client"), "",
              f"TLS 1.3, ECDSA P-256 (RSA-2048 where a row says so); server pinned to core "
              f"{cores[0]}, client to core {cores[1]}; client: {env['client']}; median of "
              f"{s.repeats} "
              f"(± half the min-max spread); {elapsed:.0f} s"]
    if loads:
        header.append(f"other load on those cores during the windows: median "
                      f"{statistics.median(loads):.2f}, max {max(loads):.2f} cores")
    report = "\n".join(header) + "\n\n" + report
    print()
    print(report)
    if args.results != "-":
        title = (f"TLS 1.3 servers per server CPU-second (idle: RSS per connection), "
                 f"median of {s.repeats}; {env['date']}")
        md, no_chart = save_results(Path(args.results), report, runs, impls, title)
        print(f"\nwrote {md}" + (f" and {md.with_suffix('.png')}" if no_chart is None
                                 else f" (no chart: {no_chart})"), file=sys.stderr)
    if args.json:
        medians = {i: {f"{m.workload}.{m.key}": v[0] for m in METRICS
                       if (v := median_of(runs, i, m))} for i in impls}
        Path(args.json).write_text(json.dumps(
            {"environment": env, "settings": asdict(s), "cores": cores, "impls": impls,
             "workloads": workloads, "medians": medians, "ratios": ratios(runs, impls),
             "fallback_ratios": ratios(runs, impls, TARGET + FALLBACK), "runs": runs,
             "errors": errors, "elapsed_s": elapsed, "command": args.command}, indent=2))
    return 1 if errors else 0


def measure(impl: str, workload: str, certdir: Path, s: Settings,
            cores: tuple[int | None, int | None], loadclient: Path | None, retries: int,
            tag: str, baseline: Path | None = None) -> dict[str, Any]:
    """run_cell, repeated (at most `retries` times) while other load spoils the window."""
    best: dict[str, Any] | None = None
    for attempt in range(retries + 1):
        result = run_cell(impl, workload, certdir, s, cores, loadclient, baseline)
        if best is None or result.get("other_load", 0.0) < best.get("other_load", 0.0):
            best = result
        if best.get("other_load", 0.0) <= NOISY:
            break
        if attempt < retries:
            print(f"{tag} noisy ({result['other_load']:.2f} other cores), again",
                  file=sys.stderr)
            time.sleep(2.0)  # let a burst of someone else's work pass
    assert best is not None
    return best


def brief(result: dict[str, Any]) -> str:
    """One progress line for a cell's result."""
    if "kib_per_conn" in result:
        return f"{result['kib_per_conn']:.1f} KiB/conn"
    load = (f"server busy {result['server_busy']:.0%}, client {result['client_busy']:.0%}, "
            f"other {result['other_load']:.2f}" + (" (noisy)" if is_noisy(result) else ""))
    if "mib_per_s" in result:
        return (f"{result['mib_per_cpu_s']:,.0f} MiB/CPU-s, {result['mib_per_s']:,.0f} MiB/s; "
                + load)
    if "msg_per_s" in result:
        return (f"{result['msg_per_cpu_s']:,.0f} msgs/CPU-s, {result['msg_per_s']:,.0f} msgs/s, "
                f"p50 {result['p50_us']:,.0f} µs, p99 {result['p99_us']:,.0f} µs; " + load)
    return (f"{result['op_per_cpu_s']:,.0f} hs/CPU-s, {result['op_per_s']:,.0f} hs/s, "
            f"reused {result['resumed_fraction']:.0%}; " + load)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments; dispatch to the orchestrator, or to a server/client child role."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="short smoke run (< ~60 s)")
    p.add_argument("--repeats", type=int, default=0, help="repeats per cell (default 3; quick 1)")
    p.add_argument("--only", default=",".join(WORKLOADS), help="workloads, comma-separated")
    p.add_argument("--impl", default=",".join(IMPLS), help="impls, comma-separated")
    p.add_argument("--hs-workers", type=int, default=0,
                   help="concurrent handshake clients (default 8)")
    p.add_argument("--client", choices=("auto", "c", "python"), default="auto",
                   help="echo/handshake load client: C/GnuTLS (built on the fly) or Python")
    p.add_argument("--noise-retries", type=int, default=-1,
                   help=f"re-measure a cell whose window saw > {NOISY} cores of other load "
                   "(default 2; quick 0)")
    p.add_argument("--json", help="also write all results to this JSON file")
    p.add_argument("--results", default=str(DEFAULT_RESULTS),
                   help="directory for <timestamp>.md (the table) and <timestamp>.png (the "
                   "chart); '-' writes neither (default: benchmarks/results)")
    p.add_argument("--baseline", type=Path,
                   help=f"another checkout of aiotls: impls ending in {BASELINE} (e.g. "
                   f"aiotls+uvloop{BASELINE}) run its aiotls, beside this one's")
    p.add_argument("--role", choices=("server", "client"), help=argparse.SUPPRESS)
    p.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--workload", help=argparse.SUPPRESS)
    p.add_argument("--certdir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    p.add_argument("--settings", help=argparse.SUPPRESS)
    p.add_argument("--loadclient", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.command = shlex.join(["python", "benchmarks/bench.py",
                               *(sys.argv[1:] if argv is None else argv)])
    if args.role == "server":
        server_main(args.impl, args.workload, args.certdir, args.tree)
        return 0
    if args.role == "client":
        client_main(args.workload, args.port, args.server_pid, args.certdir,
                    Settings(**json.loads(args.settings)),
                    Path(args.loadclient) if args.loadclient else None)
        return 0
    impls = {i for i in args.impl.split(",") if i}
    based = {i for i in impls if i.endswith(BASELINE)}
    if based and args.baseline is None:
        p.error(f"{', '.join(sorted(based))}: give --baseline DIR (another aiotls checkout)")
    unknown = {i.removesuffix(BASELINE) for i in impls} - set(IMPLS)
    unknown |= {i for i in based if not i.startswith("aiotls")}
    unknown |= {w for w in args.only.split(",") if w} - set(WORKLOADS)
    if unknown:
        p.error(f"unknown impl/workload: {', '.join(sorted(unknown))}")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
