#!/usr/bin/env python3
"""Python frames and cffi/C calls per echoed 1 KiB message, per TLS server stack and app.

    python benchmarks/profile_msg.py [--impl aiotls+uvloop,uvloop+ssl,...]
                                     [--app protocol,streams] [--messages N] [--top N]
                                     [--json out.json]

For each (impl, app) a fresh server process runs bench.py's server app (the Protocol app,
data_received -> write, or the streams app, reader.read -> writer.write) and starts one
client process: Python ssl over one connection, each 1 KiB request waiting for its echo, so
every message is handled on its own (no batching). After a warm-up the server times N
messages unprofiled (its thread CPU per message), then counts N more with sys.setprofile:
'call' events (Python frames entered, coroutine resumptions included) and 'c_call' events
(C functions called from Python; cffi calls into OpenSSL show as lib.SSL_read and the like).
The "-fallback" impls run with AIOTLS_NO_EXTENSIONS=1, as in bench.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any

import bench

APPS = {"protocol": "rr-protocol", "streams": "rr-streams"}
APP_NAMES = {"protocol": "Protocol app", "streams": "streams app"}
IMPLS = ("asyncio+ssl", "uvloop+ssl", "aiotls", "aiotls+uvloop", "aiotls-fallback",
         "aiotls+uvloop-fallback")
MESSAGE = 1024
PHASE_TIMEOUT = 120.0  # seconds for the whole exchange with one client


class Events:
    """A sys.setprofile function counting Python calls and C calls by what was called."""

    def __init__(self) -> None:
        self.calls: Counter[types.CodeType] = Counter()
        self.c_calls: Counter[tuple[object, str]] = Counter()

    def __call__(self, frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "call":
            self.calls[frame.f_code] += 1
        elif event == "c_call":
            owner = getattr(arg, "__self__", None)
            # a module names its functions; otherwise the owner's type does (bytes.join)
            key = owner if isinstance(owner, types.ModuleType) else type(owner)
            self.c_calls[(key, arg.__name__)] += 1


def code_name(code: types.CodeType) -> str:
    """file:line qualified-name, the file relative to the repository or its package."""
    path = Path(code.co_filename)
    try:
        where = str(path.relative_to(bench.REPO_ROOT))
    except ValueError:
        where = "/".join(path.parts[-2:])
    return f"{where}:{code.co_firstlineno} {code.co_qualname}"


def c_name(owner: object, name: str) -> tuple[str, str]:
    """(kind, name) of a C function: "cffi" for cryptography's lib and ffi, else "C"."""
    cls = owner if isinstance(owner, type) else type(owner)
    if cls.__module__ == "_cffi_backend":  # a Lib (a module, for Python) or an FFI
        return "cffi", ("ffi." if cls.__name__ == "FFI" else "lib.") + name
    if cls is tuple and name == "allocator":  # ffi.new_allocator() gives one bound to a tuple
        return "cffi", "ffi.new_allocator()"
    if isinstance(owner, types.ModuleType):
        return "C", f"{owner.__name__}.{name}"
    return "C", name if owner is type(None) else f"{getattr(owner, '__name__', owner)}.{name}"


def summarise(events: Events, messages: int, top: int) -> dict[str, Any]:
    """Per-message totals and the `top` most frequent functions."""
    rows = [("py", code_name(code), n) for code, n in events.calls.items()]
    rows += [(*c_name(owner, name), n) for (owner, name), n in events.c_calls.items()]
    rows.sort(key=lambda r: -r[2])
    per = {kind: sum(n for k, _, n in rows if k == kind) / messages
           for kind in ("py", "cffi", "C")}
    return {"python_frames_per_msg": per["py"], "cffi_calls_per_msg": per["cffi"],
            "other_c_calls_per_msg": per["C"],
            "top": [{"kind": k, "function": f, "per_msg": n / messages}
                    for k, f, n in rows[:top]]}


# ---------------------------------------------------------------------------- server role


async def profile_server(impl: str, app: str, certdir: Path, messages: int, warmup: int,
                         top: int, client_core: int | None) -> dict[str, Any]:
    """Serve one client process; time, then profile, `messages` echoed messages each."""
    loop = asyncio.get_running_loop()
    server = await bench.start_app_server(impl, APPS[app], certdir)
    port = server.sockets[0].getsockname()[1]
    client = subprocess.Popen(
        [sys.executable, __file__, "--role", "client", "--port", str(port), "--certdir",
         str(certdir), "--messages", str(messages), "--warmup", str(warmup)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=bench.preexec(client_core))
    assert client.stdin is not None and client.stdout is not None
    to_client, marks = client.stdin, client.stdout.fileno()
    events = Events()
    cpu: dict[str, float] = {}
    finished: asyncio.Future[None] = loop.create_future()

    def on_mark() -> None:
        """The client's phase marks: TIME, PROFILE (each waits for our "GO"), then DONE."""
        mark = os.read(marks, 64).strip()
        if mark == b"TIME":
            cpu["start"] = time.thread_time()
        elif mark == b"PROFILE":
            cpu["timed"] = time.thread_time() - cpu["start"]
            sys.setprofile(events)
        elif mark == b"DONE":
            sys.setprofile(None)
        if mark in (b"TIME", b"PROFILE"):
            to_client.write(b"GO\n")
            to_client.flush()
        elif finished.done():
            pass
        elif mark == b"DONE":
            finished.set_result(None)
        else:  # EOF or garbage: the client failed
            finished.set_exception(RuntimeError(f"client: {mark!r} (exit {client.poll()})"))

    loop.add_reader(marks, on_mark)
    try:
        await asyncio.wait_for(finished, PHASE_TIMEOUT)
    finally:
        sys.setprofile(None)
        loop.remove_reader(marks)
        client.stdin.close()
        try:
            client.wait(10)
        except subprocess.TimeoutExpired:
            client.kill()  # only the process we started
            client.wait(10)
        client.stdout.close()
        server.close()
    return {"impl": impl, "app": app, "data_path": bench.data_path(impl),
            "messages": messages, "cpu_us_per_msg": cpu["timed"] * 1e6 / messages,
            **summarise(events, messages, top)}


def server_main(args: argparse.Namespace) -> None:
    """Entry point of the profiled server process: print its result as JSON."""
    sys.path.insert(0, str(bench.REPO_ROOT))  # this checkout's aiotls, as bench.py's servers
    coro = profile_server(args.impl, args.app, args.certdir, args.messages, args.warmup,
                          args.top, args.client_core)
    if "uvloop" in args.impl:
        import uvloop

        result = uvloop.run(coro)
    else:
        result = asyncio.run(coro)
    print(json.dumps(result))


# ---------------------------------------------------------------------------- client role


def client_main(port: int, certdir: Path, messages: int, warmup: int) -> None:
    """One connection: warm-up, then two phases of `messages` requests, marked on stdout."""
    ctx = bench.client_context(certdir)
    request = os.urandom(MESSAGE)
    with socket.create_connection((bench.HOST, port), timeout=bench.IO_TIMEOUT) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with ctx.wrap_socket(raw, server_hostname=bench.SERVER_NAME) as tls:
            echo(tls, request, warmup)
            for mark in ("TIME", "PROFILE"):
                print(mark, flush=True)
                if sys.stdin.readline().strip() != "GO":
                    raise SystemExit(f"no GO after {mark}")
                echo(tls, request, messages)
            print("DONE", flush=True)


def echo(tls: ssl.SSLSocket, request: bytes, count: int) -> None:
    """Send `count` requests one after the other, each after the previous one's full echo."""
    for _ in range(count):
        tls.sendall(request)
        got = 0
        while got < len(request):
            chunk = tls.recv(len(request) - got)
            if not chunk:
                raise ConnectionError("server closed the connection")
            got += len(chunk)


# ---------------------------------------------------------------------------- orchestration


def report(results: list[dict[str, Any]]) -> str:
    """A summary table, then each configuration's most frequent functions, in markdown."""
    lines = ["| impl | app | data path | Python frames/msg | cffi calls/msg | other C calls/msg"
             " | server CPU µs/msg (unprofiled, 1 conn) |", "|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['impl']} | {APP_NAMES[r['app']]} | {r['data_path'] or '-'} | "
              f"{r['python_frames_per_msg']:.1f} | {r['cffi_calls_per_msg']:.1f} | "
              f"{r['other_c_calls_per_msg']:.1f} | {r['cpu_us_per_msg']:.1f} |"
              for r in results]
    for r in results:
        lines += ["", f"### {r['impl']}, {APP_NAMES[r['app']]}", "",
                  "| per msg | kind | function |", "|---:|---|---|"]
        lines += [f"| {t['per_msg']:.2f} | {t['kind']} | `{t['function']}` |"
                  for t in r["top"] if t["per_msg"] >= 0.01]
    return "\n".join(lines)


def orchestrate(args: argparse.Namespace) -> int:
    """Run each (impl, app) in its own server process; print the report."""
    impls = [i for i in args.impl.split(",") if i]
    apps = [a for a in args.app.split(",") if a]
    server_core, client_core = bench.choose_cores()
    results, failed = [], 0
    with tempfile.TemporaryDirectory(prefix="aiotls-profile-") as tmp:
        certdir = Path(tmp)
        bench.make_certs(certdir)
        for impl in impls:
            env = {k: v for k, v in os.environ.items() if k != "AIOTLS_NO_EXTENSIONS"}
            if impl.endswith(bench.FALLBACK):
                env["AIOTLS_NO_EXTENSIONS"] = "1"
            for app in apps:
                proc = subprocess.run(
                    [sys.executable, __file__, "--role", "server", "--impl", impl, "--app",
                     app, "--certdir", str(certdir), "--messages", str(args.messages),
                     "--warmup", str(args.warmup), "--top", str(args.top), "--client-core",
                     "" if client_core is None else str(client_core)],
                    capture_output=True, text=True, env=env, timeout=PHASE_TIMEOUT + 60,
                    preexec_fn=bench.preexec(server_core), cwd=bench.REPO_ROOT, check=False)
                if proc.returncode != 0:
                    failed += 1
                    tail = proc.stderr.strip().splitlines()[-1:]
                    print(f"{impl} {app}: failed: {tail}", file=sys.stderr)
                    continue
                results.append(json.loads(proc.stdout))
                r = results[-1]
                print(f"{impl:22} {app:8} {r['python_frames_per_msg']:6.1f} frames, "
                      f"{r['cffi_calls_per_msg']:5.1f} cffi, {r['other_c_calls_per_msg']:5.1f}"
                      f" other C calls, {r['cpu_us_per_msg']:6.1f} µs per message",
                      file=sys.stderr)
    print(f"command: `{args.command}`\n\n{args.messages} messages of {MESSAGE} bytes, one "
          "connection, each request after the previous echo\n")
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"command": args.command, "results": results}, indent=2))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments; dispatch to the orchestrator, or to a server/client child role."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--impl", default=",".join(IMPLS), help="impls, comma-separated")
    p.add_argument("--app", default=",".join(APPS), help="apps: protocol, streams")
    p.add_argument("--messages", type=int, default=2000, help="messages timed and profiled")
    p.add_argument("--warmup", type=int, default=300, help="messages before either")
    p.add_argument("--top", type=int, default=15, help="functions listed per configuration")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--role", choices=("server", "client"), help=argparse.SUPPRESS)
    p.add_argument("--certdir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--client-core", type=lambda v: int(v) if v else None,
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.command = shlex.join(["python", "benchmarks/profile_msg.py",
                               *(sys.argv[1:] if argv is None else argv)])
    if args.role == "server":
        server_main(args)
        return 0
    if args.role == "client":
        client_main(args.port, args.certdir, args.messages, args.warmup)
        return 0
    unknown = {i for i in args.impl.split(",") if i} - set(IMPLS)
    unknown |= {a for a in args.app.split(",") if a} - set(APPS)
    if unknown or args.messages < 1 or args.warmup < 0:
        p.error(f"unknown impl/app or bad count: {', '.join(sorted(unknown))}")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
