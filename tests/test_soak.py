"""Reliability: connect/abort cycles release every descriptor and do not grow memory."""

from __future__ import annotations

import asyncio
import gc
import os

import pytest
from peers import HOST
from util import echo, eventually, tls_server

import aiotls


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


@pytest.mark.timeout(60)
async def test_connect_abort_cycles_leak_nothing(server_ctx, client_ctx) -> None:
    async with tls_server(echo, server_ctx, handshake_timeout=2) as (server, port):

        async def cycle(i: int) -> None:
            if i % 3 == 0:  # abort mid-handshake from a raw TCP client
                _, writer = await asyncio.open_connection(HOST, port)
                writer.write(b"\x16\x03\x01")
                writer.transport.abort()
                return
            reader, writer = await aiotls.open_connection(
                HOST, port, context=client_ctx, servername="localhost"
            )
            writer.write(b"x" * 1000)
            await reader.readexactly(1000)
            if i % 3 == 1:
                writer.transport.abort()  # a reset after data
            else:
                writer.close()
                await writer.wait_closed()

        async def settle() -> None:
            await eventually(lambda: server.get_connections() == 0, timeout=2)
            gc.collect()

        for i in range(60):  # warm-up: allocator pools, caches, lazy imports
            await cycle(i)
        await settle()
        fds, rss = _open_fds(), _rss_kib()
        for i in range(600):
            await cycle(i)
        await settle()
        assert server.get_connections() == 0
        assert _open_fds() <= fds  # every socket released
        assert _rss_kib() - rss < 4096  # 600 cycles: under 7 KiB each would be a leak
