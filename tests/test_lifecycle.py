"""Server lifetime, failing application protocols, handshake-failure logs, the README example."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from util import echo, eventually, tls_server

import aiotls

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


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


# -- connection_made raising --------------------------------------------------


class Boom(Exception):
    pass


class ExplodingProtocol(asyncio.Protocol):
    """connection_made raises; records connection_lost."""

    def __init__(self) -> None:
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raise Boom("connection_made failed")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


async def test_client_connection_made_raising_fails_create_connection(
    server_ctx, client_ctx
) -> None:
    protocols: list[ExplodingProtocol] = []

    def factory() -> ExplodingProtocol:
        protocols.append(ExplodingProtocol())
        return protocols[-1]

    async with tls_server(echo, server_ctx) as (server, port):
        with pytest.raises(Boom):
            await asyncio.wait_for(
                aiotls.create_connection(
                    factory, "127.0.0.1", port, context=client_ctx, servername="localhost"
                ),
                5,
            )
        assert isinstance(await asyncio.wait_for(protocols[0].lost, 5), Boom)
        await eventually(lambda: server.get_connections() == 0)
        assert server.get_connections() == 0


async def test_server_connection_made_raising_closes_and_logs(
    server_ctx, client_ctx, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiotls")
    protocols: list[ExplodingProtocol] = []

    def factory() -> ExplodingProtocol:
        protocols.append(ExplodingProtocol())
        return protocols[-1]

    server = await aiotls.create_server(factory, "127.0.0.1", 0, context=server_ctx)
    async with server:
        address = server.address()
        assert isinstance(address, dict)
        with contextlib.suppress(aiotls.TLSError, ConnectionError):
            reader, writer = await _client(address["port"], client_ctx)
            try:
                assert await asyncio.wait_for(reader.read(), 5) == b""
            finally:
                writer.close()
        assert isinstance(await asyncio.wait_for(protocols[0].lost, 5), Boom)
        await eventually(lambda: server.get_connections() == 0)
        assert server.get_connections() == 0
    errors = [r for r in _aiotls_records(caplog) if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], Boom)


# -- open_connection cancelled during the handshake ------------------------------


async def test_cancelled_open_connection_leaves_no_unretrieved_future(client_ctx) -> None:
    """open_connection(sock=...) cancelled at each of its first loop iterations, against
    a server that accepts and never answers: however far the loop got (the transport
    made, the ClientHello sent), no future is left with an exception nobody reads."""
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    eofs: asyncio.Queue[None] = asyncio.Queue()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client's socket is closed
        eofs.put_nowait(None)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        for iterations in range(8):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                task = asyncio.ensure_future(
                    aiotls.open_connection(sock=sock, context=client_ctx, servername="localhost")
                )
                for _ in range(iterations):
                    await asyncio.sleep(0)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            # The server sees EOF once the client's transport has run connection_lost.
            await asyncio.wait_for(eofs.get(), 5)
            del task
            gc.collect()  # a future's "exception was never retrieved" is reported here
    finally:
        server.close()
        await server.wait_closed()
        loop.set_exception_handler(None)
    assert not unhandled, unhandled


# -- a BufferedProtocol's get_buffer --------------------------------------------


class BadBuffer(asyncio.BufferedProtocol):
    """get_buffer returns an empty buffer, or raises."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.mode == "raise":
            raise Boom("no buffer today")
        return memoryview(bytearray())

    def buffer_updated(self, nbytes: int) -> None:
        raise AssertionError("nothing can have been written into the buffer")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


@pytest.mark.parametrize("mode", ["empty", "raise"])
async def test_get_buffer_failure_reaches_connection_lost(server_ctx, client_ctx, mode) -> None:
    async with tls_server(echo, server_ctx) as (server, port):
        transport, protocol = await aiotls.create_connection(
            lambda: BadBuffer(mode), "127.0.0.1", port, context=client_ctx, servername="localhost"
        )
        transport.write(b"echo me")
        exc = await asyncio.wait_for(protocol.lost, 5)
        if mode == "empty":
            assert isinstance(exc, RuntimeError)
            assert str(exc) == "get_buffer() returned an empty buffer"
        else:
            assert isinstance(exc, Boom)
        assert transport.is_closing()
        await eventually(lambda: server.get_connections() == 0)
        assert server.get_connections() == 0


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


# -- handshake failures are logged --------------------------------------------


async def test_client_caused_handshake_failure_logged_at_info(
    server_ctx, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiotls")
    async with tls_server(echo, server_ctx) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client_port = writer.get_extra_info("sockname")[1]
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")  # plain HTTP to a TLS port
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await eventually(lambda: _aiotls_records(caplog))
    records = _aiotls_records(caplog)
    assert len(records) == 1, records
    record = records[0]
    assert record.levelno == logging.INFO and record.exc_info is None
    message = record.getMessage()
    assert f"127.0.0.1:{client_port}" in message
    assert re.search(r"\bERR_SSL_\w+", message), message


async def test_server_caused_handshake_failure_logged_at_error(
    server_ctx, ca_pem: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiotls")

    def sni(name: str | None) -> None:
        raise Boom("the SNI table is broken")

    async with tls_server(echo, server_ctx, sni_callback=sni) as (server, port):
        with pytest.raises((aiotls.TLSError, ConnectionError)):
            await aiotls.open_connection("127.0.0.1", port, ca=ca_pem, servername="localhost")
        await eventually(lambda: _aiotls_records(caplog))
    records = _aiotls_records(caplog)
    assert len(records) == 1, records
    record = records[0]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "ERR_TLS_SNI_FROM_SERVER" in record.getMessage()
    assert isinstance(record.exc_info[1], aiotls.TLSError)
    assert isinstance(record.exc_info[1].__cause__, Boom)


async def test_on_tls_client_error_replaces_the_log(
    server_ctx, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiotls")
    failures: list[BaseException] = []
    async with tls_server(
        echo, server_ctx, on_tls_client_error=lambda exc, t: failures.append(exc)
    ) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await eventually(lambda: failures)
    assert len(failures) == 1 and isinstance(failures[0], aiotls.TLSError)
    assert not _aiotls_records(caplog)


# -- the README's server example survives a client without close_notify -----------


def _readme_example() -> dict[str, Any]:
    """The README's "A server and a client" block, executed as a module (main() not run)."""
    text = README.read_text()
    section = text.split("## A server and a client", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(block.group(1), str(README), "exec"), namespace)
    return namespace


async def test_readme_server_survives_client_without_close_notify(server_ctx, client_ctx) -> None:
    handle = _readme_example()["handle"]
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    outcomes: list[asyncio.Future[BaseException | None]] = []

    async def observed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        outcome = loop.create_future()
        outcomes.append(outcome)
        try:
            await handle(reader, writer)
        except BaseException as exc:
            outcome.set_result(exc)
            raise
        outcome.set_result(None)

    try:
        async with tls_server(observed, server_ctx) as (server, port):
            reader, writer = await _client(port, client_ctx)
            writer.write(b"hello")
            assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"
            writer.transport.abort()  # TCP FIN, no close_notify
            assert await asyncio.wait_for(outcomes[0], 5) is None

            reader, writer = await _client(port, client_ctx)  # still serving
            writer.write(b"again")
            assert await asyncio.wait_for(reader.readexactly(5), 5) == b"again"
            writer.close()
            await writer.wait_closed()
            assert await asyncio.wait_for(outcomes[1], 5) is None
    finally:
        loop.set_exception_handler(None)
    assert not unhandled, unhandled


async def test_example_echo_server_survives_client_without_close_notify(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "echo_server.py"), "--port", "0", "--once",
        "--ca-out", str(ca_file),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        port = 0
        while not port:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, "the example exited before listening"
            if match := re.match(r"listening on 127\.0\.0\.1:(\d+)", line):
                port = int(match.group(1))
        reader, writer = await aiotls.open_connection(
            "127.0.0.1", port, ca=ca_file.read_bytes(), servername="localhost"
        )
        writer.write(b"hello\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"hello\n"
        writer.transport.abort()  # TCP FIN, no close_notify
        out = (await asyncio.wait_for(proc.communicate(), 30))[0].decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, out
    assert " error: " in out and "Traceback" not in out and "Unhandled" not in out, out
