"""start_tls: STARTTLS upgrades (bytes already buffered are kept) and TLS inside TLS."""

from __future__ import annotations

import asyncio

import trustme
from util import echo, tls_server

import aiotls


async def test_starttls_keeps_bytes_already_buffered(server_ctx, ca_pem: str) -> None:
    buffered_at_upgrade: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readline() == b"STARTTLS\n"
        while not reader._buffer:  # type: ignore[attr-defined]  # wait for the ClientHello
            await asyncio.sleep(0.01)
        buffered_at_upgrade.append(len(reader._buffer))  # type: ignore[attr-defined]
        await aiotls.start_tls(writer, server_side=True, context=server_ctx)
        line = await reader.readline()
        writer.write(b"secure: " + line)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"STARTTLS\n")  # no reply awaited: the ClientHello follows at once
        assert await aiotls.start_tls(writer, ca=ca_pem, servername="localhost") is None
        assert writer.get_extra_info("tls").get_protocol() == "TLSv1.3"
        writer.write(b"hello\n")
        assert await reader.readline() == b"secure: hello\n"
        writer.close()
    assert buffered_at_upgrade and buffered_at_upgrade[0] > 0


async def test_start_tls_on_a_transport(server_ctx, client_ctx) -> None:
    async with tls_server(echo, server_ctx) as (_, port):
        loop = asyncio.get_running_loop()
        received = asyncio.Queue[bytes]()

        class App(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                received.put_nowait(data)

        # A plain TCP connection, then TLS on it: the aiotls server speaks TLS from byte one.
        raw, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        tls = await aiotls.start_tls(
            raw, protocol=App(), context=client_ctx, servername="localhost"
        )
        assert isinstance(tls, aiotls.TLSTransport)
        tls.write(b"ping")
        assert await asyncio.wait_for(received.get(), 5) == b"ping"
        tls.close()


async def test_tls_inside_tls(server_ctx, client_ctx, ca: trustme.CA) -> None:
    inner_cert = ca.issue_cert("inner.test")
    inner_ctx = aiotls.create_secure_context(
        key=inner_cert.private_key_pem.bytes(),
        cert=b"".join(b.bytes() for b in inner_cert.cert_chain_pems),
        max_version="TLSv1.2",
    )

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await aiotls.start_tls(writer, server_side=True, context=inner_ctx)
        await echo(reader, writer)

    async with tls_server(handler, server_ctx) as (_, port):
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", port, context=client_ctx, servername="localhost"
        )
        outer = writer.get_extra_info("tls")
        await aiotls.start_tls(writer, context=client_ctx, servername="inner.test")
        inner = writer.get_extra_info("tls")
        assert outer.get_protocol() == "TLSv1.3" and inner.get_protocol() == "TLSv1.2"
        assert "DNS:inner.test" in inner.get_peer_certificate()["subjectaltname"]
        payload = bytes(range(256)) * 4000
        writer.write(payload)
        assert await reader.readexactly(len(payload)) == payload
        writer.close()
        await writer.wait_closed()
