"""Interop with Python's own ``ssl`` module, on blocking sockets in a worker thread.

The stdlib peer runs outside the event loop under test, so neither side can lean on
the other's scheduling. ``SSLSocket.version()`` and ``cipher()`` give the peer's view
of the negotiated protocol and suite (OpenSSL names, as aiotls's ``name``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl

import pytest
from peers import (
    HOST,
    PEER_TIMEOUT,
    VERSIONS,
    Seen,
    aiotls_echo_server,
    aiotls_exchange,
    random_payload,
    sha256,
    version_options,
)

_CHUNK = 64 * 1024


def pin_version(ctx: ssl.SSLContext, version: str) -> ssl.SSLContext:
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion[version.replace(".", "_")]
    return ctx


def _seen(tls: ssl.SSLSocket, data: bytes | bytearray) -> Seen:
    cipher = tls.cipher()
    assert cipher is not None
    name, cipher_version, _bits = cipher
    return Seen(tls.version(), {"name": name, "version": cipher_version}, len(data), sha256(data))


def _close(tls: ssl.SSLSocket) -> None:
    """Answer the peer's close_notify with ours (the peer may already be gone)."""
    with contextlib.suppress(OSError):  # ssl.SSLError included
        tls.unwrap()


def stdlib_echo_server(listener: socket.socket, ctx: ssl.SSLContext) -> Seen:
    """Accept one connection and echo it until the client's close_notify."""
    conn, _ = listener.accept()
    conn.settimeout(PEER_TIMEOUT)
    with ctx.wrap_socket(conn, server_side=True) as tls:
        received = bytearray()
        while chunk := tls.recv(_CHUNK):
            received += chunk
            tls.sendall(chunk)
        seen = _seen(tls, received)
        _close(tls)
    return seen


def stdlib_echo_client(port: int, ctx: ssl.SSLContext, payload: bytes) -> Seen:
    """Send ``payload`` chunk by chunk, reading each echo back before the next chunk.

    (One thread cannot send and receive at once on a blocking SSLSocket, so the
    exchange goes in lockstep.) The server closes once it has echoed everything.
    """
    with (
        socket.create_connection((HOST, port), timeout=PEER_TIMEOUT) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        received = bytearray()
        for start in range(0, len(payload), _CHUNK):
            tls.sendall(payload[start : start + _CHUNK])
            while len(received) < min(start + _CHUNK, len(payload)):
                chunk = tls.recv(_CHUNK)
                assert chunk, f"EOF after {len(received)} of {len(payload)} bytes"
                received += chunk
        assert tls.recv(1) == b"", "the server should have closed after the echo"
        seen = _seen(tls, received)
        _close(tls)
    return seen


@pytest.mark.parametrize("version", VERSIONS)
async def test_stdlib_client_to_aiotls_server(
    version: str, server_key_pem: str, server_chain_pem: str, server_files: dict[str, str]
) -> None:
    payload = random_payload()
    ctx = pin_version(ssl.create_default_context(cafile=server_files["ca"]), version)
    async with aiotls_echo_server(
        len(payload), key=server_key_pem, cert=server_chain_pem, **version_options(version)
    ) as (port, server_seen):
        client = await asyncio.wait_for(
            asyncio.to_thread(stdlib_echo_client, port, ctx, payload), PEER_TIMEOUT
        )
        server = await asyncio.wait_for(server_seen, PEER_TIMEOUT)

    assert client.protocol == server.protocol == version
    assert server.cipher is not None and client.cipher is not None
    assert client.cipher["name"] == server.cipher["name"]
    assert client.cipher["version"] == server.cipher["version"] == version
    assert (server.nbytes, server.sha256) == (len(payload), sha256(payload))
    assert (client.nbytes, client.sha256) == (len(payload), sha256(payload))


@pytest.mark.parametrize("version", VERSIONS)
async def test_aiotls_client_to_stdlib_server(
    version: str, ca_pem: str, server_files: dict[str, str]
) -> None:
    payload = random_payload()
    ctx = pin_version(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), version)
    ctx.load_cert_chain(server_files["cert"], server_files["key"])
    with socket.create_server((HOST, 0)) as listener:
        listener.settimeout(PEER_TIMEOUT)
        port = listener.getsockname()[1]
        server_task = asyncio.ensure_future(asyncio.to_thread(stdlib_echo_server, listener, ctx))
        try:
            client = await aiotls_exchange(
                port, payload, len(payload),
                ca=ca_pem, servername="localhost", **version_options(version),
            )  # fmt: skip
            server = await asyncio.wait_for(server_task, PEER_TIMEOUT)
        finally:
            server_task.cancel()  # the thread itself ends by its socket timeouts

    assert client.protocol == server.protocol == version
    assert client.cipher is not None and server.cipher is not None
    assert client.cipher["name"] == server.cipher["name"]
    assert client.cipher["version"] == server.cipher["version"] == version
    assert (server.nbytes, server.sha256) == (len(payload), sha256(payload))
    assert (client.nbytes, client.sha256) == (len(payload), sha256(payload))
