"""Renegotiation (TLS 1.2), post-handshake client authentication (TLS 1.3), limits."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
import trustme
from peers import HOST, require, run_peer
from util import echo, eventually, tls_server

import aiotls

TLS12 = {"max_version": "TLSv1.2"}


@pytest.fixture
def client_identity(client_cert: trustme.LeafCert) -> dict[str, bytes]:
    return {
        "key": client_cert.private_key_pem.bytes(),
        "cert": b"".join(b.bytes() for b in client_cert.cert_chain_pems),
    }


def _echo_recording(errors: list[BaseException], *, disable_renegotiation: bool = False) -> Any:
    """An echo handler that records the TLSError ending its connection."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if disable_renegotiation:
            writer.transport.disable_renegotiation()  # type: ignore[attr-defined]
        try:
            while data := await reader.read(65536):
                writer.write(data)
        except aiotls.TLSError as exc:
            errors.append(exc)
        writer.close()

    return handler


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"


async def test_client_renegotiates_when_the_server_allows(server_ctx, ca_pem) -> None:
    async with tls_server(echo, server_ctx, allow_renegotiation=True) as (_, port):
        reader, writer = await aiotls.open_connection(
            HOST, port, ca=ca_pem, servername="localhost", **TLS12
        )
        await _roundtrip(reader, writer)
        await writer.transport.renegotiate()
        await _roundtrip(reader, writer)
        writer.close()


async def test_client_renegotiation_refused_by_default(server_ctx, ca_pem) -> None:
    async with tls_server(echo, server_ctx) as (_, port):
        reader, writer = await aiotls.open_connection(
            HOST, port, ca=ca_pem, servername="localhost", **TLS12
        )
        await _roundtrip(reader, writer)
        with pytest.raises(aiotls.TLSError):
            await asyncio.wait_for(asyncio.gather(writer.transport.renegotiate(), reader.read()), 5)
        writer.close()


async def test_renegotiation_limit_is_a_session_attack(server_ctx, ca_pem, monkeypatch) -> None:
    monkeypatch.setattr(aiotls, "CLIENT_RENEG_LIMIT", 2)  # read at each attempt, like Node
    errors: list[BaseException] = []
    handler = _echo_recording(errors)

    async with tls_server(handler, server_ctx, allow_renegotiation=True) as (_, port):
        reader, writer = await aiotls.open_connection(
            HOST, port, ca=ca_pem, servername="localhost", **TLS12
        )
        for _ in range(2):
            await writer.transport.renegotiate()
            await _roundtrip(reader, writer)
        with pytest.raises((aiotls.TLSError, ConnectionError)):
            await asyncio.wait_for(writer.transport.renegotiate(), 5)
        await eventually(lambda: errors, timeout=1)
        assert errors and errors[0].code == "ERR_TLS_SESSION_ATTACK"  # type: ignore[attr-defined]
        writer.close()


async def test_disable_renegotiation_on_the_server(server_ctx, ca_pem) -> None:
    errors: list[BaseException] = []
    handler = _echo_recording(errors, disable_renegotiation=True)

    async with tls_server(handler, server_ctx, allow_renegotiation=True) as (_, port):
        reader, writer = await aiotls.open_connection(
            HOST, port, ca=ca_pem, servername="localhost", **TLS12
        )
        await _roundtrip(reader, writer)
        with pytest.raises((aiotls.TLSError, ConnectionError)):
            await asyncio.wait_for(writer.transport.renegotiate(), 5)
        await eventually(lambda: errors, timeout=1)
        assert errors[0].code == "ERR_TLS_RENEGOTIATION_DISABLED"  # type: ignore[attr-defined]
        writer.close()


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
async def test_server_requests_a_client_certificate_later(
    server_key_pem, server_chain_pem, ca_pem, client_identity, version
) -> None:
    """TLS 1.2: server-initiated renegotiation; TLS 1.3: post-handshake authentication."""
    ctx = aiotls.create_secure_context(key=server_key_pem, cert=server_chain_pem, ca=ca_pem)
    results: list[tuple[bool, bool, str | None]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = writer.transport
        before = tls.authorized  # type: ignore[attr-defined]
        await reader.readexactly(5)
        await tls.renegotiate(request_cert=True)  # type: ignore[attr-defined]
        peer = tls.get_peer_certificate()  # type: ignore[attr-defined]
        results.append((before, tls.authorized, peer["subject"]["CN"]))  # type: ignore[attr-defined]
        writer.write(b"done")
        await writer.drain()
        writer.close()

    async with tls_server(handler, ctx) as (_, port):
        reader, writer = await aiotls.open_connection(
            HOST, port, ca=ca_pem, servername="localhost", max_version=version, **client_identity
        )
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"done"
        assert results == [(False, True, "client")]
        writer.close()


async def test_tls13_client_cannot_renegotiate(server_ctx, client_ctx) -> None:
    async with tls_server(echo, server_ctx) as (_, port):
        reader, writer = await aiotls.open_connection(
            HOST, port, context=client_ctx, servername="localhost"
        )
        with pytest.raises(aiotls.TLSError) as info:
            await writer.transport.renegotiate()
        assert info.value.code == "ERR_TLS_RENEGOTIATION_UNSUPPORTED"
        await _roundtrip(reader, writer)  # the connection is unharmed
        writer.close()


@pytest.mark.parametrize("allow", [True, False])
async def test_openssl_s_client_R_command(server_ctx, server_files, allow: bool) -> None:
    """s_client's "R" renegotiates when allowed; otherwise OpenSSL says no_renegotiation."""
    require("openssl")

    connected: asyncio.Future[aiotls.TLSTransport] = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set_result(writer.transport)  # type: ignore[arg-type]
        with contextlib.suppress(aiotls.TLSError):  # refused: s_client gives up with an alert
            await echo(reader, writer)

    async with tls_server(handler, server_ctx, allow_renegotiation=allow) as (_, port):
        argv = ["openssl", "s_client", "-connect", f"{HOST}:{port}", "-tls1_2",
                "-CAfile", server_files["ca"], "-servername", "localhost"]  # fmt: skip
        async with run_peer(*argv) as peer:
            await peer.wait_for_output(r"(Verify return code: 0)")
            server_side = await connected
            first_finished = server_side.get_finished()
            await peer.feed(b"R\n", close=False)
            await peer.wait_for_output(r"(RENEGOTIATING)", stream="stderr")
            if allow:
                # The server sent a new Finished: the renegotiation is done on its side.
                await eventually(lambda: server_side.get_finished() != first_finished)
                assert server_side.get_finished() != first_finished
                await peer.feed(b"after\n", close=False)
                await peer.wait_for_output(r"^(after)$")
            else:
                await peer.wait_for_output(r"(no renegotiation)", stream="stderr")
            await peer.kill()


async def test_node_client_renegotiate(server_ctx, server_files) -> None:
    require("node")
    script = """
const tls = require('tls'), fs = require('fs');
const s = tls.connect({host: '127.0.0.1', port: +process.argv[1], servername: 'localhost',
  ca: fs.readFileSync(process.argv[2]), maxVersion: 'TLSv1.2'}, () => {
  s.renegotiate({rejectUnauthorized: true}, (err) => {
    console.log(JSON.stringify({err: err ? err.message : null}));
    s.write('x'); s.once('data', () => s.end());
  });
});
s.on('error', (e) => console.log(JSON.stringify({socketError: e.message})));
"""
    async with tls_server(echo, server_ctx, allow_renegotiation=True) as (_, port):
        async with run_peer("node", "-e", script, str(port), server_files["ca"]) as peer:
            line = await peer.wait_for_output(r"^(\{.*\})$")
            await peer.wait()
        assert line == ('{"err":null}',)
