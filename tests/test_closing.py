"""Closing, aborting, half-close, timeouts and hostile clients, over loopback."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time

import pytest
from util import echo, eventually, tls_server

import aiotls


class Recorder(asyncio.Protocol):
    """Records what a connection saw, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.data = bytearray()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.keep_open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        self.events.append("eof")
        return self.keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost.set_result(exc)


async def _connect(
    port: int, ctx: aiotls.SecureContext, **kw
) -> tuple[aiotls.TLSTransport, Recorder]:
    return await aiotls.create_connection(
        Recorder, "127.0.0.1", port, context=ctx, servername="localhost", **kw
    )


async def test_graceful_close_from_client(server_ctx, client_ctx) -> None:
    seen: list[Recorder] = []

    def factory() -> Recorder:
        seen.append(Recorder())
        return seen[-1]

    server = await aiotls.create_server(factory, "127.0.0.1", 0, context=server_ctx)
    async with server:
        transport, client = await _connect(server.address()["port"], client_ctx)  # type: ignore[index]
        transport.write(b"last words")
        transport.close()
        assert transport.is_closing()
        assert await asyncio.wait_for(client.lost, 5) is None
        assert await asyncio.wait_for(seen[0].lost, 5) is None
        assert bytes(seen[0].data) == b"last words"  # sent before close_notify
        assert seen[0].events == ["made", "eof", "lost"]
        assert client.events == ["made", "lost"]
        assert server.get_connections() == 0


async def test_graceful_close_from_server(server_ctx, client_ctx) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye")
        writer.close()

    async with tls_server(handler, server_ctx) as (_, port):
        transport, client = await _connect(port, client_ctx)
        assert await asyncio.wait_for(client.lost, 5) is None
        assert client.events == ["made", "eof", "lost"] and bytes(client.data) == b"bye"


async def test_peer_that_never_answers_close_notify(server_ctx, client_ctx) -> None:
    """The server keeps its side open after our close_notify: shutdown_timeout ends it."""
    server = await aiotls.create_server(Recorder, "127.0.0.1", 0, context=server_ctx)
    server_protocols: list[Recorder] = []
    orig = server._factory

    def factory() -> Recorder:
        proto = orig()
        proto.keep_open = True  # half-open: never sends its close_notify
        server_protocols.append(proto)  # type: ignore[arg-type]
        return proto  # type: ignore[return-value]

    server._factory = factory
    async with server:
        transport, client = await _connect(
            server.address()["port"],
            client_ctx,
            shutdown_timeout=0.3,  # type: ignore[index]
        )
        start = time.monotonic()
        transport.close()
        assert await asyncio.wait_for(client.lost, 5) is None
        assert time.monotonic() - start >= 0.25
        server_protocols[0].transport.close()  # type: ignore[union-attr]


async def test_shutdown_timeout_zero_closes_at_once(server_ctx, client_ctx) -> None:
    async with tls_server(echo, server_ctx) as (_, port):
        transport, client = await _connect(port, client_ctx, shutdown_timeout=0)
        transport.close()
        assert await asyncio.wait_for(client.lost, 5) is None


def _ragged_server(ctx: ssl.SSLContext, listener: socket.socket) -> None:
    """A stdlib server that sends data then drops TCP without close_notify."""
    conn, _ = listener.accept()
    with ctx.wrap_socket(conn, server_side=True) as tls:
        tls.sendall(b"truncated?")
        time.sleep(0.1)
        # SSLSocket.close() sends no close_notify: a ragged EOF.


@pytest.mark.parametrize("suppress", [False, True])
async def test_eof_without_close_notify(server_files, ca_pem: str, suppress: bool) -> None:
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(server_files["cert"], server_files["key"])
    listener = socket.create_server(("127.0.0.1", 0))
    thread = threading.Thread(target=_ragged_server, args=(sctx, listener), daemon=True)
    thread.start()
    try:
        reader, writer = await aiotls.open_connection(
            "127.0.0.1",
            listener.getsockname()[1],
            ca=ca_pem,
            servername="localhost",
            suppress_ragged_eofs=suppress,
        )
        assert await reader.readexactly(10) == b"truncated?"
        if suppress:
            assert await asyncio.wait_for(reader.read(), 5) == b""
        else:
            with pytest.raises(aiotls.TLSError) as info:
                await asyncio.wait_for(reader.read(), 5)
            assert info.value.code == "ERR_SSL_UNEXPECTED_EOF_WHILE_READING"
        writer.close()
    finally:
        thread.join(5)
        listener.close()


async def test_abort_mid_transfer_and_server_goes_on(server_ctx, client_ctx) -> None:
    errors: list[BaseException] = []

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(65536):
                pass
        except (aiotls.TLSError, ConnectionError) as exc:
            errors.append(exc)
        writer.close()

    async with tls_server(sink, server_ctx) as (server, port):
        transport, client = await _connect(port, client_ctx)
        for _ in range(64):
            transport.write(b"x" * 65536)
        transport.abort()
        assert await asyncio.wait_for(client.lost, 5) is None
        await eventually(lambda: errors and server.get_connections() == 0, timeout=2)
        assert errors and server.get_connections() == 0
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", port, context=client_ctx, servername="localhost"
        )
        writer.close()
        await writer.wait_closed()


async def test_half_close_tls13(server_ctx, client_ctx) -> None:
    """write_eof sends close_notify; the server reads to EOF, then still answers."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()  # until the client's close_notify
        writer.write(b"got " + str(len(request)).encode())
        await writer.drain()
        writer.close()

    async with tls_server(handler, server_ctx) as (_, port):
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", port, context=client_ctx, servername="localhost"
        )
        assert writer.can_write_eof()
        writer.write(b"a" * 100_000)
        writer.write_eof()
        with pytest.raises(RuntimeError):
            writer.write(b"after eof")
        assert await asyncio.wait_for(reader.read(), 5) == b"got 100000"
        writer.close()
        await writer.wait_closed()


async def test_stalled_client_hits_handshake_timeout_others_served(server_ctx, client_ctx) -> None:
    errors: list[BaseException] = []
    async with tls_server(
        echo, server_ctx, handshake_timeout=0.5, on_tls_client_error=lambda e, t: errors.append(e)
    ) as (server, port):
        stalled_reader, stalled_writer = await asyncio.open_connection("127.0.0.1", port)
        # Meanwhile a real client is served at once.
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", port, context=client_ctx, servername="localhost"
        )
        writer.write(b"hi")
        assert await reader.readexactly(2) == b"hi"
        assert not errors
        assert await asyncio.wait_for(stalled_reader.read(), 5) == b""  # reaped
        assert len(errors) == 1 and isinstance(errors[0], aiotls.TLSHandshakeTimeout)
        assert errors[0].code == "ERR_TLS_HANDSHAKE_TIMEOUT"
        assert isinstance(errors[0], TimeoutError)
        writer.close()
        stalled_writer.close()


async def test_junk_reaches_on_tls_client_error(server_ctx, client_ctx) -> None:
    failures: list[tuple[BaseException, aiotls.TLSTransport]] = []

    async def on_error(exc: BaseException, transport: aiotls.TLSTransport) -> None:
        failures.append((exc, transport))

    async with tls_server(echo, server_ctx, on_tls_client_error=on_error) as (server, port):
        raw_reader, raw_writer = await asyncio.open_connection("127.0.0.1", port)
        raw_writer.write(b"\x16\x03\x01\x00\x05hello this is not TLS")
        answer = await asyncio.wait_for(raw_reader.read(), 5)
        assert answer[:1] == b"\x15"  # the fatal alert made it out before the close
        await eventually(lambda: failures, timeout=1)
        exc, transport = failures[0]
        assert isinstance(exc, aiotls.TLSError) and exc.code.startswith("ERR_SSL_")
        assert isinstance(transport, aiotls.TLSTransport)
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", port, context=client_ctx, servername="localhost"
        )
        writer.close()
        raw_writer.close()


async def test_truncated_handshake_is_reported(server_ctx, client_ctx) -> None:
    """Half a ClientHello, then EOF: a TLSError for this client; the server goes on."""
    failures: list[BaseException] = []
    async with tls_server(
        echo, server_ctx, on_tls_client_error=lambda exc, t: failures.append(exc)
    ) as (server, port):
        engine = aiotls.TLSEngine(client_ctx, server_hostname="localhost")
        engine.do_handshake()
        hello = engine.data_to_send()
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(hello[: len(hello) // 2])
        writer.write_eof()
        await eventually(lambda: failures, timeout=1)
        assert isinstance(failures[0], aiotls.TLSError)
        assert failures[0].code == "ERR_SSL_UNEXPECTED_EOF_WHILE_READING"
        writer.close()
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", port, context=client_ctx, servername="localhost"
        )
        writer.close()
