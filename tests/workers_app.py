"""A multi-core aiotls server for tests/test_workers.py (run as a subprocess).

``serve`` mode: ``aiotls.serve`` with the key and certificate as ``pathlib.Path`` files.
``supervise`` mode: ``aiotls.workers.supervise`` with a plain ``prepare`` that counts its
calls, and ``--fail`` a worker main that raises before it serves.

Each connection first gets a line "<worker pid> <generation>" (serve mode: the pid and
"-"), then an echo of what it sends. The ``aiotls.workers`` log goes to stdout, one line
per record, for the test to wait on.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from pathlib import Path

import aiotls
from aiotls.workers import WorkerChannel, supervise


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tag: str) -> None:
    writer.write(f"{os.getpid()} {tag}\n".encode())
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (aiotls.TLSError, OSError):
        pass
    finally:
        writer.close()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await echo(reader, writer, "-")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["serve", "supervise"])
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--reuse-port", choices=["auto", "yes", "no"], default="auto")
    parser.add_argument("--max-version", default=None)
    parser.add_argument("--interval", type=float, default=3600.0)
    parser.add_argument("--graceful", type=float, default=10.0)
    parser.add_argument("--fail", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    reuse_port = {"auto": None, "yes": True, "no": False}[args.reuse_port]
    common = {
        "workers": args.workers,
        "loop": args.loop,
        "reuse_port": reuse_port,
        "ticket_key_interval": args.interval,
        "graceful_timeout": args.graceful,
    }
    if args.mode == "serve":
        options = {"max_version": args.max_version} if args.max_version else {}
        aiotls.serve(handle, "127.0.0.1", 0, key=args.key, cert=args.cert, **common, **options)
        return 0

    calls = 0

    def prepare() -> int:
        nonlocal calls
        calls += 1
        print(f"prepare call {calls}", flush=True)
        return calls

    async def worker_main(sock: socket.socket, channel: WorkerChannel[int]) -> None:
        if args.fail:
            raise RuntimeError("boom before serving")

        async def tagged(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await echo(reader, writer, str(channel.config))

        server = await aiotls.start_server(tagged, sock=sock, key=args.key, cert=args.cert)
        await channel.serve(server)

    try:
        supervise(worker_main, host="127.0.0.1", port=0, prepare=prepare, **common)
    except RuntimeError as exc:
        print(f"supervise raised: {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
