"""Who is authorized: the servername rule (sock=, path=, start_tls), identity on
resumed sessions, async identity checks."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from peers import HOST
from util import echo, eventually, tls_server

import aiotls

# -- a client needs a name to check the server against ------------------------------


@contextlib.asynccontextmanager
async def connected_socket(port: int) -> AsyncIterator[socket.socket]:
    """A connected TCP socket for sock= (closed on the way out if nobody took it)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (HOST, port))
        yield sock
    finally:
        sock.close()


async def test_sock_without_servername_is_a_value_error(server_ctx, ca_pem: str) -> None:
    async with tls_server(echo, server_ctx) as (_, port), connected_socket(port) as sock:
        with pytest.raises(ValueError, match="servername"):
            await aiotls.open_connection(sock=sock, ca=ca_pem)


@pytest.mark.parametrize(
    "options",
    [{"servername": ""}, {"reject_unauthorized": False}],
    ids=["opt-out", "unverified"],
)
async def test_sock_without_a_name_is_never_authorized(
    server_ctx, ca_pem: str, options: dict[str, Any]
) -> None:
    names: list[str | None] = []
    async with (
        tls_server(echo, server_ctx, on_secure_connection=lambda t: names.append(t.servername)) as (
            _,
            port,
        ),
        connected_socket(port) as sock,
    ):
        reader, writer = await aiotls.open_connection(sock=sock, ca=ca_pem, **options)
        tls = writer.get_extra_info("tls")
        assert (tls.authorized, tls.authorization_error) == (False, "ERR_TLS_NO_SERVERNAME")
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        assert names == [None]  # no SNI either
        writer.close()


async def test_sock_with_an_identity_check_of_ones_own(server_ctx, ca_pem: str) -> None:
    seen: list[str] = []

    def pin(host: str, cert: dict[str, Any]) -> None:
        seen.append(host)

    async with tls_server(echo, server_ctx) as (_, port), connected_socket(port) as sock:
        _, writer = await aiotls.open_connection(sock=sock, ca=ca_pem, check_server_identity=pin)
        assert writer.get_extra_info("tls").authorized and seen == [""]
        writer.close()


@pytest.mark.skipif(sys.platform == "win32", reason="unix sockets")
async def test_unix_path_needs_servername(server_ctx, ca_pem: str, tmp_path: Path) -> None:
    path = str(tmp_path / "tls.sock")
    server = await aiotls.start_server(echo, path=path, context=server_ctx)
    try:
        with pytest.raises(ValueError, match="servername"):
            await aiotls.open_connection(path=path, ca=ca_pem)
        _, writer = await aiotls.open_connection(path=path, ca=ca_pem, servername="localhost")
        assert writer.get_extra_info("tls").authorized
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_start_tls_client_needs_servername(server_ctx, ca_pem: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readline() == b"STARTTLS\n"
        await aiotls.start_tls(writer, server_side=True, context=server_ctx)
        await echo(reader, writer)

    server = await asyncio.start_server(handler, HOST, 0)
    async with server:
        reader, writer = await asyncio.open_connection(HOST, server.sockets[0].getsockname()[1])
        with pytest.raises(ValueError, match="servername"):
            await aiotls.start_tls(writer, ca=ca_pem)
        writer.write(b"STARTTLS\n")  # the connection is untouched: still plaintext
        await aiotls.start_tls(writer, ca=ca_pem, servername="localhost")
        assert writer.get_extra_info("tls").authorized
        writer.write(b"over TLS")
        assert await reader.readexactly(8) == b"over TLS"
        writer.close()


# -- check_server_identity may be a coroutine function ------------------------------


@pytest.mark.parametrize("accept", [True, False])
async def test_async_check_server_identity_is_awaited(
    server_ctx, ca_pem: str, accept: bool
) -> None:
    calls: list[str] = []
    answered = asyncio.Event()

    async def check(host: str, cert: dict[str, Any]) -> None:
        calls.append(host)
        await answered.wait()  # the handshake waits for the verdict
        if not accept:
            raise ValueError("not the pinned key")

    async with tls_server(echo, server_ctx) as (_, port):
        loop = asyncio.get_running_loop()
        loop.call_soon(answered.set)
        if accept:
            _, writer = await aiotls.open_connection(
                HOST, port, ca=ca_pem, servername="localhost", check_server_identity=check
            )
            assert writer.get_extra_info("tls").authorized
            writer.close()
        else:
            with pytest.raises(aiotls.TLSCertificateError, match="not the pinned key") as info:
                await aiotls.open_connection(
                    HOST, port, ca=ca_pem, servername="localhost", check_server_identity=check
                )
            assert info.value.code == "ERR_TLS_CERT_ALTNAME_INVALID"
    assert calls == ["localhost"]


# -- a resumed session skips the identity check (Node's onConnectSecure) --------------


async def _session(
    port: int, ca_pem: str, version: str, check: Callable[..., Any], **kw: Any
) -> tuple[aiotls.TLSTransport, bytes | None]:
    """One connection; its transport and the (last) session a full handshake gave."""
    sessions: list[bytes] = []
    reader, writer = await aiotls.open_connection(
        HOST, port, ca=ca_pem, servername="localhost", max_version=version,
        check_server_identity=check, on_session=sessions.append, **kw,
    )  # fmt: skip
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"  # TLS 1.3 tickets come after the handshake
    tls = writer.transport
    assert isinstance(tls, aiotls.TLSTransport)
    if not tls.session_reused:
        await eventually(lambda: sessions)
    writer.close()
    await writer.wait_closed()
    return tls, sessions[-1] if sessions else None


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
async def test_resumed_session_skips_the_identity_check(
    server_ctx, ca_pem: str, version: str
) -> None:
    calls: list[str] = []

    def once(host: str, cert: dict[str, Any]) -> None:
        calls.append(host)
        if len(calls) > 1:
            raise ValueError("the identity check ran again")

    async with tls_server(echo, server_ctx) as (_, port):
        first, session = await _session(port, ca_pem, version, once)
        assert first.authorized and not first.session_reused and calls == ["localhost"]
        again, _ = await _session(port, ca_pem, version, once, session=session)
        assert again.session_reused
        assert (again.authorized, again.authorization_error) == (True, None)
        assert calls == ["localhost"]


async def test_resumed_session_keeps_its_chain_verdict(server_ctx) -> None:
    """Only the identity check is skipped: the session carries its verify result."""
    stranger = trustme.CA().cert_pem.bytes().decode()
    calls: list[str] = []
    async with tls_server(echo, server_ctx) as (_, port):
        first, session = await _session(
            port, stranger, "TLSv1.3", calls.append, reject_unauthorized=False
        )
        again, _ = await _session(
            port, stranger, "TLSv1.3", calls.append, reject_unauthorized=False, session=session
        )
        assert again.session_reused
        assert (again.authorized, again.authorization_error) == (
            False,
            "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
        )
        with pytest.raises(aiotls.TLSCertificateError) as info:
            await _session(port, stranger, "TLSv1.3", calls.append, session=session)
        assert info.value.code == "UNABLE_TO_VERIFY_LEAF_SIGNATURE"
    assert calls == []  # a chain that failed is never asked about its identity (Node)
