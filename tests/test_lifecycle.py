"""Server lifetime, failing application protocols, handshake-failure logs, the README example."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from util import echo, eventually

import aiotls

README = Path(__file__).resolve().parent.parent / "README.md"


async def _client(port: int, ctx: aiotls.SecureContext) -> tuple[Any, Any]:
    return await aiotls.open_connection("127.0.0.1", port, context=ctx, servername="localhost")


def _aiotls_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "aiotls"]


# -- wait_closed waits for the connections --------------------------------------


async def test_wait_closed_waits_for_open_connections(server_ctx, client_ctx) -> None:
    server = await aiotls.start_server(echo, "127.0.0.1", 0, context=server_ctx)
    address = server.address()
    assert isinstance(address, dict)
    reader, writer = await _client(address["port"], client_ctx)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"

    server.close()
    closed = asyncio.ensure_future(server.wait_closed())
    writer.write(b"still served")  # the open connection goes on after close()
    assert await asyncio.wait_for(reader.readexactly(12), 5) == b"still served"
    assert not closed.done()
    with pytest.raises(OSError):  # but no new connection is accepted
        await _client(address["port"], client_ctx)

    writer.close()
    await writer.wait_closed()
    await asyncio.wait_for(closed, 5)
    assert server.get_connections() == 0


async def test_wait_closed_without_connections(server_ctx, client_ctx) -> None:
    server = await aiotls.start_server(echo, "127.0.0.1", 0, context=server_ctx)
    early = asyncio.ensure_future(server.wait_closed())  # before close(): waits for it
    address = server.address()
    assert isinstance(address, dict)
    reader, writer = await _client(address["port"], client_ctx)
    writer.close()
    await writer.wait_closed()
    await eventually(lambda: server.get_connections() == 0)
    assert not early.done()
    server.close()
    await asyncio.wait_for(server.wait_closed(), 1)
    await asyncio.wait_for(early, 1)

    async with await aiotls.start_server(echo, "127.0.0.1", 0, context=server_ctx) as other:
        assert other.is_serving()
    assert not other.is_serving()


# -- a server needs a certificate source -----------------------------------------


async def test_server_without_certificate_raises(client_ctx) -> None:
    for call in (
        lambda: aiotls.start_server(echo, "127.0.0.1", 0),
        lambda: aiotls.start_server(echo, "127.0.0.1", 0, context=client_ctx),
        lambda: aiotls.create_server(asyncio.Protocol, "127.0.0.1", 0, ciphers="ECDHE+AESGCM"),
    ):
        with pytest.raises(aiotls.TLSConfigError) as info:
            await call()
        assert isinstance(info.value, ValueError)
        message = str(info.value)
        for option in ("key", "cert", "pfx", "sni_callback", "add_context"):
            assert option in message


async def test_server_with_sni_callback_only_starts(server_ctx, client_ctx) -> None:
    names: list[str | None] = []

    def sni(name: str | None) -> aiotls.SecureContext:
        names.append(name)
        return server_ctx

    server = await aiotls.start_server(echo, "127.0.0.1", 0, sni_callback=sni)
    async with server:
        address = server.address()
        assert isinstance(address, dict)
        reader, writer = await _client(address["port"], client_ctx)
        writer.write(b"hi")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"hi"
        writer.close()
        await writer.wait_closed()
    assert names == ["localhost"]
