#!/usr/bin/env python3
"""Where a TLS 1.3 server's CPU goes per handshake: OpenSSL, or the rest (Python, loop, kernel).

    python benchmarks/profile_hs.py [--impl aiotls+uvloop,uvloop+ssl,aiotls,asyncio+ssl]
                                    [--resume] [--seconds S] [--syscalls] [--client auto|c|python]
                                    [--floor-handshakes N] [--top N] [--json out.json]

For each impl a fresh server process (pinned to core 0) runs bench.py's handshake app
(greet_handler, ECDSA P-256 certificate) and starts bench's load client (loadclient.c, built
on the fly, else the Python one; core 1) handshaking for as long as it needs. The server,
counting handshakes in its app, then measures three windows in-process: its CPU per
handshake unprofiled (getrusage); a cProfile window (timer: thread CPU time) giving the time
per handshake inside OpenSSL's handshake call (cffi's SSL_do_handshake for aiotls,
_ssl._SSLSocket.do_handshake for the ssl module), SSL_new/SSL_free where Python sees them, and
the calls per handshake; with --syscalls and strace on PATH, strace -c -f over a third window.
Last, the "floor": OpenSSL's server-side handshake CPU with no I/O at all, a loop of
in-memory handshakes against a Python ssl client, for pyOpenSSL (the wheel's OpenSSL) and
Python's ssl module (the system's OpenSSL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import resource
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import bench

IMPLS = ("aiotls+uvloop", "uvloop+ssl", "aiotls", "asyncio+ssl")
DEFAULT_IMPLS = "aiotls+uvloop,uvloop+ssl"
# cProfile's names for OpenSSL's entry points, as cffi (aiotls) or the _ssl module calls them
HANDSHAKE = ("<built-in method _openssl.SSL_do_handshake>",
             "<method 'do_handshake' of '_ssl._SSLSocket' objects>")
SSL_NEW = ("<built-in method _openssl.SSL_new>",
           "<method '_wrap_bio' of '_ssl._SSLContext' objects>")  # _ssl's SSL_new lives here
SSL_FREE = ("<built-in method _openssl.SSL_free>",)  # _ssl frees in a destructor: unseen
WARMUP = 0.5  # seconds of handshakes before the first window
STRACE_ATTACH_TIMEOUT = 10.0
FLOOR_WARMUP = 20  # in-memory handshakes before the timed ones

Stats = dict[tuple[str, int, str], tuple[int, int, float, float, Any]]


def label(key: tuple[str, int, str]) -> str:
    """A cProfile entry as file:line name (built-ins by their name alone)."""
    path, line, name = key
    if path == "~":
        return name
    try:
        where = str(Path(path).relative_to(bench.REPO_ROOT))
    except ValueError:
        where = "/".join(Path(path).parts[-2:])
    return f"{where}:{line} {name}"


def summarise(stats: Stats, handshakes: int, top: int) -> dict[str, Any]:
    """Per-handshake OpenSSL time and call counts from one cProfile window."""

    def seconds(names: tuple[str, ...]) -> float | None:
        hits = [tt for (path, _, name), (_, _, tt, _, _) in stats.items()
                if path == "~" and name in names]
        return sum(hits) if hits else None

    def per_hs_us(value: float | None) -> float | None:
        return None if value is None else value * 1e6 / handshakes

    builtin = [v for (path, _, _), v in stats.items() if path == "~"]
    python = [v for (path, _, _), v in stats.items() if path != "~"]
    by_time = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    return {
        "openssl_hs_us": per_hs_us(seconds(HANDSHAKE)),
        "ssl_new_us": per_hs_us(seconds(SSL_NEW)),
        "ssl_free_us": per_hs_us(seconds(SSL_FREE)),
        "primitive_calls_per_hs": sum(v[0] for v in stats.values()) / handshakes,
        "python_frames_per_hs": sum(v[1] for v in python) / handshakes,
        "c_calls_per_hs": sum(v[1] for v in builtin) / handshakes,
        "profiled_cpu_us": sum(v[2] for v in stats.values()) * 1e6 / handshakes,
        "top": [{"function": label(key), "calls_per_hs": v[1] / handshakes,
                 "tottime_us_per_hs": v[2] * 1e6 / handshakes} for key, v in by_time],
    }


def parse_strace(text: str) -> Counter[str]:
    """Calls per syscall from `strace -c` output (the summary table)."""
    calls: Counter[str] = Counter()
    for line in text.splitlines():
        fields = line.split()
        # "% time  seconds  usecs/call  calls  [errors]  syscall"
        if len(fields) in (5, 6) and fields[3].isdigit() and fields[-1] != "total":
            calls[fields[-1]] += int(fields[3])
    return calls


# ---------------------------------------------------------------------------- server role


class Counted:
    """bench's greet_handler, counting the connections it got (one per handshake done)."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.count += 1
        await bench.greet_handler(reader, writer)


def client_command(args: argparse.Namespace, port: int, total: float) -> list[str]:
    """The load client for `total` seconds: loadclient.c if built, else bench's Python one."""
    workers = bench.FULL.hs_workers
    if args.loadclient:
        return [args.loadclient, "resume" if args.resume else "hs", str(port),
                str(args.certdir / "ca.pem"), str(workers), "0", str(total)]
    settings = replace(bench.FULL, hs_warmup=0.0, hs_seconds=total)
    return [sys.executable, str(Path(bench.__file__).resolve()), "--role", "client",
            "--workload", "hs-resumed" if args.resume else "hs", "--port", str(port),
            "--server-pid", str(os.getpid()), "--certdir", str(args.certdir),
            "--settings", json.dumps(asdict(settings)), "--loadclient", ""]


async def strace_window(app: Counted, seconds: float) -> dict[str, Any]:
    """strace -c -f this process over `seconds`; syscalls per handshake by name."""
    loop = asyncio.get_running_loop()
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out.name, "-p", str(os.getpid())],
                                  stderr=subprocess.PIPE)
        assert tracer.stderr is not None
        attached: asyncio.Future[None] = loop.create_future()
        said = bytearray()

        def on_stderr() -> None:
            said.extend(os.read(tracer.stderr.fileno(), 4096) or b"EOF")  # type: ignore[union-attr]
            if (b"attached" in said or b"EOF" in said) and not attached.done():
                attached.set_result(None)

        loop.add_reader(tracer.stderr.fileno(), on_stderr)
        try:
            await asyncio.wait_for(attached, STRACE_ATTACH_TIMEOUT)
            if b"attached" not in said:
                raise RuntimeError(f"strace could not attach: {bytes(said)!r}")
            start = app.count
            await asyncio.sleep(seconds)
            handshakes = app.count - start
        finally:
            loop.remove_reader(tracer.stderr.fileno())
            tracer.send_signal(signal.SIGINT)  # strace detaches and writes its summary
            await loop.run_in_executor(None, tracer.wait, 30)
            tracer.stderr.close()
        calls = parse_strace(out.read())
    return {"syscall_handshakes": handshakes,
            "syscalls_per_hs": sum(calls.values()) / max(handshakes, 1),
            "syscalls": {name: n / max(handshakes, 1) for name, n in calls.most_common()}}


async def profile_server(args: argparse.Namespace) -> dict[str, Any]:
    """Serve handshakes to a load client; measure the unprofiled, profiled (and traced) windows."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, _context: None)  # clients dropped at the end
    app = Counted()
    workload = "hs-resumed" if args.resume else "hs"
    server = await bench.start_app_server(args.impl, workload, args.certdir, greet=app)
    port = server.sockets[0].getsockname()[1]
    windows = 3 if args.syscalls else 2
    total = WARMUP + windows * args.seconds + 30.0  # ended by us long before that
    client = subprocess.Popen(client_command(args, port, total), stdout=subprocess.DEVNULL,
                              preexec_fn=bench.preexec(args.client_core))
    result: dict[str, Any] = {"impl": args.impl, "resumed": args.resume,
                              "data_path": bench.data_path(args.impl)}
    try:
        await asyncio.sleep(WARMUP)
        if app.count == 0:
            raise RuntimeError(f"no handshake in the warm-up (client exit {client.poll()})")
        start, usage = app.count, resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(args.seconds)
        end, handshakes = resource.getrusage(resource.RUSAGE_SELF), app.count - start
        user, system = end.ru_utime - usage.ru_utime, end.ru_stime - usage.ru_stime
        result.update(handshakes=handshakes, cpu_us=(user + system) * 1e6 / handshakes,
                      kernel_us=system * 1e6 / handshakes)

        profiler = cProfile.Profile(time.thread_time)
        start = app.count
        profiler.enable()
        await asyncio.sleep(args.seconds)
        profiler.disable()
        profiled = app.count - start
        stats: Stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        result.update(profiled_handshakes=profiled, **summarise(stats, profiled, args.top))
        if args.syscalls:
            result.update(await strace_window(app, args.seconds))
    finally:
        client.kill()  # only the process we started
        await loop.run_in_executor(None, client.wait, 10)
        server.close()
    return result


def server_main(args: argparse.Namespace) -> None:
    """Entry point of the profiled server process: print its result as JSON."""
    sys.path.insert(0, str(bench.REPO_ROOT))  # this checkout's aiotls, as bench.py's servers
    if "uvloop" in args.impl:
        import uvloop

        result = uvloop.run(profile_server(args))
    else:
        result = asyncio.run(profile_server(args))
    print(json.dumps(result))


# ---------------------------------------------------------------------------- the floor

ServerStep = Callable[[bytes], bytes]  # feed the client's bytes, return the server's answer


def ssl_module_server(certdir: Path, spent: list[float]) -> Callable[[], ServerStep]:
    """New server-side SSLObjects (Python's ssl, system OpenSSL), timing do_handshake."""
    key, chain = bench.server_cert(certdir, "hs")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(chain, key)

    def new() -> ServerStep:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_side=True)

        def step(data: bytes) -> bytes:
            incoming.write(data)
            start = time.thread_time()
            with contextlib.suppress(ssl.SSLWantReadError):
                obj.do_handshake()
            spent[0] += time.thread_time() - start
            return outgoing.read()

        return step

    return new


def pyopenssl_server(certdir: Path, spent: list[float]) -> Callable[[], ServerStep]:
    """New server-side pyOpenSSL Connections (the wheel's OpenSSL), timing do_handshake."""
    from OpenSSL import SSL

    key, chain = bench.server_cert(certdir, "hs")
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.use_certificate_chain_file(str(chain))
    ctx.use_privatekey_file(str(key))

    def new() -> ServerStep:
        conn = SSL.Connection(ctx, None)
        conn.set_accept_state()

        def step(data: bytes) -> bytes:
            conn.bio_write(data)
            start = time.thread_time()
            with contextlib.suppress(SSL.WantReadError):
                conn.do_handshake()
            spent[0] += time.thread_time() - start
            out = bytearray()
            while True:
                try:
                    out += conn.bio_read(65536)
                except SSL.WantReadError:  # the outgoing BIO is empty
                    return bytes(out)

        return step

    return new


def floor_us(new_server: Callable[[], ServerStep], spent: list[float], certdir: Path,
             handshakes: int, resume: bool) -> float:
    """Server do_handshake CPU µs per in-memory handshake against a Python ssl client."""
    client_ctx = bench.client_context(certdir)
    session: ssl.SSLSession | None = None
    for i in range(FLOOR_WARMUP + handshakes):
        if i == FLOOR_WARMUP:
            spent[0] = 0.0
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = client_ctx.wrap_bio(incoming, outgoing, server_hostname=bench.SERVER_NAME,
                                     session=session)
        server = new_server()
        while True:
            try:
                client.do_handshake()
            except ssl.SSLWantReadError:
                incoming.write(server(outgoing.read()))
                continue
            break
        incoming.write(server(outgoing.read()))  # the client's Finished; back: the tickets
        if resume:
            if session is not None and not client.session_reused:
                raise RuntimeError("an in-memory handshake did not resume")
            try:
                client.read(1)  # takes in the tickets
            except ssl.SSLWantReadError:
                session = client.session
    return spent[0] * 1e6 / handshakes


def floor_main(args: argparse.Namespace) -> None:
    """Entry point of the floor process: both OpenSSLs' in-memory handshake CPU, as JSON."""
    from OpenSSL import SSL

    result = {}
    for name, version, make in (
            ("pyOpenSSL", SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode(), pyopenssl_server),
            ("ssl", ssl.OPENSSL_VERSION, ssl_module_server)):
        spent = [0.0]
        result[name] = {"openssl": version, "us_per_hs": floor_us(
            make(args.certdir, spent), spent, args.certdir, args.floor_handshakes, args.resume)}
    print(json.dumps(result))


# ---------------------------------------------------------------------------- orchestration


def fmt(value: float | None, digits: int = 0) -> str:
    """A number for the table, "-" when not measured."""
    return "-" if value is None else f"{value:,.{digits}f}"


def report(results: list[dict[str, Any]], floor: dict[str, Any] | None, top: int) -> str:
    """The per-impl table, the floor line and each impl's costliest functions, in markdown."""
    def row(name: str, key: str, digits: int = 0) -> str:
        return f"| {name} | " + " | ".join(fmt(r.get(key), digits) for r in results) + " |"

    for r in results:
        openssl = [r[k] for k in ("openssl_hs_us", "ssl_new_us", "ssl_free_us") if r[k]]
        r["openssl_us"] = sum(openssl) if openssl else None
        r["rest_us"] = r["cpu_us"] - r["openssl_us"] if openssl else None
    lines = ["| per handshake | " + " | ".join(r["impl"] for r in results) + " |",
             "|---|" + "---:|" * len(results),
             row("server CPU µs (unprofiled window)", "cpu_us"),
             row("… of it in the kernel, µs", "kernel_us"),
             row("OpenSSL handshake µs (SSL_do_handshake)", "openssl_hs_us"),
             row("SSL_new µs", "ssl_new_us", 1),
             row("SSL_free µs", "ssl_free_us", 1),
             row("the rest µs: Python + event loop + kernel", "rest_us"),
             row("Python frames", "python_frames_per_hs", 1),
             row("C calls (from Python)", "c_calls_per_hs", 1),
             row("cProfile primitive calls", "primitive_calls_per_hs", 1)]
    if any("syscalls_per_hs" in r for r in results):
        lines.append(row("syscalls (strace -c -f)", "syscalls_per_hs", 1))
    lines.append(row("handshakes in the unprofiled window", "handshakes"))
    if floor:
        lines += ["", "floor (server do_handshake CPU, in-memory, no I/O, X25519): " + ", ".join(
            f"{f['us_per_hs']:.0f} µs with {name} ({f['openssl']})" for name, f in floor.items())]
    for r in results:
        lines += ["", f"### {r['impl']}: top {top} by own time (profiled, thread CPU)", "",
                  "| µs/hs | calls/hs | function |", "|---:|---:|---|"]
        lines += [f"| {t['tottime_us_per_hs']:.1f} | {t['calls_per_hs']:.2f} | `{t['function']}` |"
                  for t in r["top"]]
        if "syscalls" in r:
            lines += ["", "syscalls/hs: " + ", ".join(
                f"{name} {n:.2f}" for name, n in list(r["syscalls"].items())[:top])]
    return "\n".join(lines)


def child(args: argparse.Namespace, role: str, extra: list[str], core: int | None,
          timeout: float, env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Run this script in `role`; its JSON result, or None (said on stderr) if it failed."""
    cmd = [sys.executable, __file__, "--role", role, "--certdir", str(args.certdir),
           "--seconds", str(args.seconds), "--top", str(args.top), "--floor-handshakes",
           str(args.floor_handshakes), *(["--resume"] if args.resume else []), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                          preexec_fn=bench.preexec(core), cwd=bench.REPO_ROOT, check=False)
    if proc.returncode != 0:
        print(f"{role} {extra[1:2]}: failed: {proc.stderr.strip().splitlines()[-3:]}",
              file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def orchestrate(args: argparse.Namespace) -> int:
    """One server process per impl, then the floor; print the report."""
    server_core, client_core = bench.choose_cores()
    results, failed = [], 0
    with tempfile.TemporaryDirectory(prefix="aiotls-profile-hs-") as tmp:
        args.certdir = Path(tmp)
        bench.make_certs(args.certdir)
        loadclient, why = (None, "--client python") if args.client == "python" else \
            bench.build_loadclient(args.certdir)
        if loadclient is None and args.client == "c":
            print(f"loadclient.c: {why}", file=sys.stderr)
            return 1
        client = bench.C_CLIENT if loadclient else f"Python ssl, threads ({why})"
        print(f"load client: {client}", file=sys.stderr)
        env = {k: v for k, v in os.environ.items() if k != "AIOTLS_NO_EXTENSIONS"}
        timeout = WARMUP + 3 * args.seconds + 120.0
        for impl in args.impls:
            r = child(args, "server", ["--impl", impl, "--loadclient", str(loadclient or ""),
                                       "--client-core", "" if client_core is None
                                       else str(client_core),
                                       *(["--syscalls"] if args.syscalls else [])],
                      server_core, timeout, env)
            if r is None:
                failed += 1
                continue
            results.append(r)
            print(f"{impl:14} {r['cpu_us']:6.0f} µs/hs, OpenSSL {fmt(r['openssl_hs_us'])} µs, "
                  f"{r['python_frames_per_hs']:.0f} frames", file=sys.stderr)
        floor = child(args, "floor", [], server_core, 300.0) if args.floor_handshakes else None
        failed += bool(args.floor_handshakes and floor is None)
    kind = "resumed" if args.resume else "full"
    print(f"command: `{args.command}`\n\n{kind} TLS 1.3 handshakes, ECDSA P-256, load client: "
          f"{client}, {args.seconds:g} s per window\n")
    print(report(results, floor, args.top))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"command": args.command, "client": client, "results": results, "floor": floor},
            indent=2))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments; dispatch to the orchestrator, or to a server/floor child role."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--impl", default=DEFAULT_IMPLS, help=f"impls, comma-separated: {IMPLS}")
    p.add_argument("--resume", action="store_true", help="resumed handshakes (session tickets)")
    p.add_argument("--seconds", type=float, default=3.0, help="length of each window")
    p.add_argument("--syscalls", action="store_true", help="count syscalls with strace -c")
    p.add_argument("--client", choices=("auto", "c", "python"), default="auto",
                   help="load client: loadclient.c (built on the fly) or bench's Python one")
    p.add_argument("--floor-handshakes", type=int, default=500,
                   help="in-memory handshakes timed for the floor (0: no floor)")
    p.add_argument("--top", type=int, default=12, help="functions listed per impl")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--role", choices=("server", "floor"), help=argparse.SUPPRESS)
    p.add_argument("--certdir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--loadclient", help=argparse.SUPPRESS)
    p.add_argument("--client-core", type=lambda v: int(v) if v else None,
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.command = shlex.join(["python", "benchmarks/profile_hs.py",
                               *(sys.argv[1:] if argv is None else argv)])
    if args.role == "server":
        server_main(args)
        return 0
    if args.role == "floor":
        floor_main(args)
        return 0
    args.impls = [i for i in args.impl.split(",") if i]
    unknown = set(args.impls) - set(IMPLS)
    if unknown or args.seconds <= 0 or args.floor_handshakes < 0:
        p.error(f"unknown impl or bad number: {', '.join(sorted(unknown))}")
    if args.syscalls and not shutil.which("strace"):
        p.error("--syscalls needs strace on PATH")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
