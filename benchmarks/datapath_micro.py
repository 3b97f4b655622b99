#!/usr/bin/env python3
"""Micro-benchmark of the server's per-message data path: 1 KiB echo over two in-memory engines.

    python benchmarks/datapath_micro.py [--messages N] [--repeats N]

A client TLSEngine encrypts N 1 KiB messages (one record each) in advance; the server then
takes each record and echoes its plaintext, on one of three paths:

* engine: today's transport over the engine (receive_data, read until empty, send and
  take_output per write, take_output at the end, as TLSTransport._deliver and write do);
* fallback: aiotls._openssl.datapath.DataPath (pure Python);
* compiled: aiotls._speedups.DataPath (Cython), when it was built.

Reported per message: the server's time (best of the repeats), the Python frames it runs
(feed() itself included when it is Python) and its calls from Python to C functions
(cffi's OpenSSL functions, builtins such as len; a Cython method is not counted), counted
with sys.setprofile on a separate, shorter run. No I/O: this is the user-space CPU that
the network benchmark (benchmarks/bench.py) measures around the kernel's share.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import trustme

import aiotls
from aiotls import TLSEngine, _datapath
from aiotls._openssl.fnptrs import openssl_functions

MESSAGE = bytes(range(256)) * 4  # 1 KiB


def contexts() -> tuple[aiotls.SecureContext, aiotls.SecureContext]:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    server = aiotls.create_secure_context(
        key=leaf.private_key_pem.bytes(), cert=b"".join(b.bytes() for b in leaf.cert_chain_pems)
    )
    return server, aiotls.create_secure_context(ca=ca.cert_pem.bytes())


def connected(ctxs: tuple[aiotls.SecureContext, aiotls.SecureContext]) -> tuple[TLSEngine, ...]:
    """A client and a server engine after a TLS 1.3 handshake in memory."""
    client = TLSEngine(ctxs[1], server_hostname="localhost")
    server = TLSEngine(ctxs[0], server_side=True)
    moved = True
    while moved:
        moved = False
        for src, dst in ((client, server), (server, client)):
            if data := src.data_to_send():
                dst.receive_data(data)
                moved = True
    client.read()  # the session tickets
    return client, server


class Echo(asyncio.Protocol):
    """The application: data_received -> write, as a Protocol app does."""

    def __init__(self) -> None:
        self.write: Callable[[bytes], object] = print

    def data_received(self, data: bytes) -> None:
        self.write(data)


class EngineTransport:
    """The per-message work of today's TLSTransport over a TLSEngine: _raw_received, then
    _deliver (read until b"", handing each read to the app), write (send + take_output per
    write) and _deliver's final flush."""

    def __init__(self, engine: TLSEngine, app: Echo, sink: Callable[[Any], object]) -> None:
        self.engine, self.app, self.sink = engine, app, sink
        app.write = self.write

    def feed(self, data: bytes) -> None:
        self.engine.receive_data(data)
        while data := self.engine.read():
            self.app.data_received(data)
        self.flush()

    def write(self, data: bytes) -> None:
        self.engine.send(data)
        self.flush()

    def flush(self) -> None:
        out = self.engine.take_output()
        if out is not None:
            self.sink(out)


def server_path(name: str, server: TLSEngine, sink: Callable[[Any], object]) -> Any:
    """An object whose feed(record) runs the server's side of one echo on path ``name``."""
    app = Echo()
    if name == "engine":
        return EngineTransport(server, app, sink)
    cls = _datapath.DataPath if name == "fallback" else compiled()
    dp = cls(*server.raw_addresses(), openssl_functions(), app, sink, server)
    app.write = dp.write
    return dp


def compiled() -> Any:
    from aiotls import _speedups

    return _speedups.DataPath


def run(name: str, ctxs: Any, count: int, profile: bool) -> tuple[float, int, int]:
    """(ns per message, Python frames per message, C calls per message) for one run."""
    client, server = connected(ctxs)
    records = []
    for _ in range(count):
        client.send(MESSAGE)
        records.append(client.data_to_send())
    out: list[Any] = []
    path = server_path(name, server, out.append)
    feed = path.feed
    calls = {"call": 0, "c_call": 0}

    def tracer(frame: Any, event: str, arg: Any) -> None:
        if event in calls:
            calls[event] += 1

    gc.collect()
    gc.disable()
    try:
        if profile:
            sys.setprofile(tracer)
        start = time.perf_counter_ns()
        for record in records:
            feed(record)
        elapsed = time.perf_counter_ns() - start
    finally:
        sys.setprofile(None)
        gc.enable()
    for chunk in out:  # the echo is right
        client.receive_data(chunk)
    assert client.read() == MESSAGE * count, f"{name}: the echo differs"
    return elapsed / count, calls["call"] // count, calls["c_call"] // count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    ctxs = contexts()
    names = ["engine", "fallback"]
    try:
        compiled()
        names.append("compiled")
    except ImportError as exc:
        print(f"(no compiled row: {exc})", file=sys.stderr)
    print(f"1 KiB echo, TLS 1.3, server side per message, best of {args.repeats}")
    print(f"(Python {sys.version.split()[0]}, pid {os.getpid()})\n")
    print("| path | ns/msg | Python frames/msg | C calls from Python/msg |")
    print("|---|---:|---:|---:|")
    for name in names:
        best = min(run(name, ctxs, args.messages, False)[0] for _ in range(args.repeats))
        _, frames, c_calls = run(name, ctxs, min(args.messages, 2000), True)
        print(f"| {name} | {best:,.0f} | {frames} | {c_calls} |")


if __name__ == "__main__":
    main()
