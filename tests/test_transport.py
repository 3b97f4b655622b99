"""TLSTransport over real loopback sockets: data path, flow control, extra info."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import ssl
import warnings

import pytest
from util import BulkProtocol, echo, expected_digest, tls_server

import aiotls


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
async def test_echo(server_ctx, ca_pem: str, version: str) -> None:
    async with tls_server(echo, server_ctx) as (server, port):
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", port, ca=ca_pem, servername="localhost", max_version=version
        )
        tls = writer.get_extra_info("tls")
        assert tls.get_protocol() == version
        assert tls.get_cipher()["version"] == version
        assert tls.authorized and tls.authorization_error is None
        assert tls.encrypted is True
        for size in (1, 1000, 100_000):
            payload = os.urandom(size)
            writer.write(payload)
            assert await reader.readexactly(size) == payload
        assert server.get_connections() == 1
        writer.close()
        await writer.wait_closed()
        assert tls.get_protocol() is None and tls.get_peer_certificate() is None


async def test_64_mib_both_ways_with_flow_control(server_ctx, client_ctx) -> None:
    """Both sides send 64 MiB at once; both pause (writing and reading) at times."""
    total = 64 << 20
    loop = asyncio.get_running_loop()
    server_side: list[BulkProtocol] = []

    def server_factory() -> BulkProtocol:
        proto = BulkProtocol(total, total, b"server")
        server_side.append(proto)
        return proto

    server = await aiotls.create_server(server_factory, "127.0.0.1", 0, context=server_ctx)
    try:
        port = server.address()["port"]  # type: ignore[index]
        transport, client = await aiotls.create_connection(
            lambda: BulkProtocol(total, total, b"client"),
            "127.0.0.1",
            port,
            context=client_ctx,
            servername="localhost",
        )
        transport.set_write_buffer_limits(high=256 * 1024)
        await asyncio.wait_for(client.done, 120)
        await asyncio.wait_for(server_side[0].done, 30)
        assert client.digest.digest() == expected_digest(total, b"server")
        assert server_side[0].digest.digest() == expected_digest(total, b"client")
        assert client.pauses > 0 and server_side[0].pauses > 0
        assert client.read_pauses > 0 and server_side[0].read_pauses > 0
        transport.close()
        assert await asyncio.wait_for(client.lost, 10) is None
    finally:
        server.close()
        await server.wait_closed()
    del loop


class _BufferedEcho(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buf = bytearray(1000)  # small on purpose: many get_buffer rounds per chunk
        self.got = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buf)

    def buffer_updated(self, nbytes: int) -> None:
        assert self.transport is not None
        self.transport.write(bytes(self.buf[:nbytes]))


async def test_buffered_protocol_application(server_ctx, client_ctx) -> None:
    server = await aiotls.create_server(_BufferedEcho, "127.0.0.1", 0, context=server_ctx)
    async with server:
        port = server.address()["port"]  # type: ignore[index]
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", port, context=client_ctx, servername="localhost"
        )
        payload = os.urandom(300_000)
        writer.write(payload)
        assert await reader.readexactly(len(payload)) == payload
        writer.close()
        await writer.wait_closed()


async def test_get_extra_info_speaks_asyncio_and_node(
    server_key_pem: str, server_chain_pem: str, ca_pem: str
) -> None:
    ctx = aiotls.create_secure_context(
        key=server_key_pem, cert=server_chain_pem, alpn_protocols=["h2", "http/1.1"]
    )
    async with tls_server(echo, ctx) as (_, port):
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", port, ca=ca_pem, servername="localhost", alpn_protocols=["http/1.1"]
        )
        t = writer.transport
        peercert = t.get_extra_info("peercert")
        assert ("DNS", "localhost") in peercert["subjectAltName"]
        name, version, bits = t.get_extra_info("cipher")
        assert version == "TLSv1.3" and bits >= 128 and name.startswith("TLS_")
        assert isinstance(t.get_extra_info("sslcontext"), aiotls.SecureContext)
        obj = t.get_extra_info("ssl_object")
        assert obj.selected_alpn_protocol() == "http/1.1"
        assert obj.version() == "TLSv1.3"
        assert obj.cipher() == (name, version, bits)
        der = obj.getpeercert(binary_form=True)
        assert ssl.DER_cert_to_PEM_cert(der).startswith("-----BEGIN CERTIFICATE-----")
        assert t.get_extra_info("peername")[1] == port
        assert t.get_extra_info("sockname")[0] == "127.0.0.1"
        assert t.get_extra_info("socket") is not None
        tls = t.get_extra_info("tls")
        assert tls.alpn_protocol == "http/1.1" and tls.servername == "localhost"
        assert "DNS:localhost" in tls.get_peer_certificate()["subjectaltname"]
        assert tls.remote_port == port and tls.remote_family == "IPv4"
        assert tls.address()["family"] == "IPv4"
        assert tls.get_session() and tls.get_finished() and tls.get_peer_finished()
        assert len(tls.export_keying_material(32, "EXPERIMENTAL-test")) == 32
        writer.close()
        await writer.wait_closed()


async def test_unix_socket_path(server_ctx, client_ctx, tmp_path) -> None:
    path = str(tmp_path / "tls.sock")
    server = await aiotls.start_server(echo, path=path, context=server_ctx)
    async with server:
        assert server.address() == path
        reader, writer = await aiotls.open_connection(
            path=path, context=client_ctx, servername="localhost"
        )
        writer.write(b"over unix")
        assert await reader.readexactly(9) == b"over unix"
        writer.close()
        await writer.wait_closed()


async def test_sock_argument(server_ctx, client_ctx) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    server = await aiotls.start_server(echo, sock=listener, context=server_ctx)
    async with server:
        conn = socket.create_connection(("127.0.0.1", port))
        conn.setblocking(False)
        reader, writer = await aiotls.open_connection(
            sock=conn, context=client_ctx, servername="localhost"
        )
        writer.write(b"via sock=")
        assert await reader.readexactly(9) == b"via sock="
        writer.close()
        await writer.wait_closed()


async def test_unclosed_transport_warns(server_ctx, client_ctx) -> None:
    async with tls_server(echo, server_ctx) as (_, port):
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", port, context=client_ctx, servername="localhost"
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del reader, writer
            gc.collect()
        assert any(issubclass(w.category, ResourceWarning) for w in caught)
