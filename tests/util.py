"""Test helpers shared by the transport tests: servers, contexts and a bulk protocol."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiotls
from aiotls.testing import Handler
from aiotls.testing import echo as echo  # re-exported: the tests' echo handler


@contextlib.asynccontextmanager
async def tls_server(
    handler: Handler, ctx: aiotls.SecureContext, **kw: Any
) -> AsyncIterator[tuple[aiotls.Server, int]]:
    """A started aiotls stream server on 127.0.0.1; yields (server, port)."""
    server = await aiotls.start_server(handler, "127.0.0.1", 0, context=ctx, **kw)
    try:
        address = server.address()
        assert isinstance(address, dict)
        yield server, address["port"]
    finally:
        server.close()
        await server.wait_closed()


async def eventually(condition: Callable[[], object], timeout: float = 2.0) -> None:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass (then return anyway:
    the caller's assertion says what was expected)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.01)


def pattern(n: int, seed: bytes) -> bytes:
    """Deterministic pseudo-random bytes (cheap to regenerate on both sides)."""
    block = hashlib.sha512(seed).digest() * 512  # 32 KiB
    reps = n // len(block) + 1
    return (block * reps)[:n]


class BulkProtocol(asyncio.Protocol):
    """Sends ``total`` bytes honouring flow control while hashing what it receives."""

    def __init__(self, total: int, expect: int, seed: bytes, chunk: int = 256 * 1024) -> None:
        self.total, self.expect, self.chunk = total, expect, chunk
        self.data = pattern(chunk, seed)
        self.sent = 0
        self.received = 0
        self.digest = hashlib.sha256()
        self.pauses = 0
        self.read_pauses = 0
        self.paused = False
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        while not self.paused and self.sent < self.total:
            n = min(self.chunk, self.total - self.sent)
            self.transport.write(self.data[:n])
            self.sent += n
        self._check()

    def pause_writing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_writing(self) -> None:
        self.paused = False
        self._send()

    def data_received(self, data: bytes) -> None:
        self.digest.update(data)
        before = self.received
        self.received += len(data)
        # Every 8 MiB, stop reading for a moment: the peer must pause in turn.
        if self.received // (8 << 20) != before // (8 << 20):
            assert self.transport is not None
            self.transport.pause_reading()
            self.read_pauses += 1
            asyncio.get_running_loop().call_later(0.02, self.transport.resume_reading)
        self._check()

    def _check(self) -> None:
        if self.sent >= self.total and self.received >= self.expect and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("lost before done"))


def expected_digest(total: int, seed: bytes, chunk: int = 256 * 1024) -> bytes:
    """The sha256 a BulkProtocol peer computes over ``total`` bytes sent with ``seed``."""
    data = pattern(chunk, seed)
    digest = hashlib.sha256()
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        digest.update(data[:n])
        sent += n
    return digest.digest()
