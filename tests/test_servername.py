"""The server's ``servername`` is the SNI of the current handshake, resumed ones too.

OpenSSL's SSL_get_servername answers a resumed TLS 1.2 handshake from the session,
which holds no name unless a servername callback accepted one; aiotls reads the SNI
from each ClientHello instead. Peers: aiotls, openssl s_client, and nginx as a
reverse proxy that resumes its TLS sessions to the upstream.
"""

from __future__ import annotations

import asyncio

import pytest
from peers import HOST, PEER_TIMEOUT, require, run_nginx, run_peer
from util import eventually, tls_server

import aiotls

OP_NO_TICKET = 0x4000
needs_hello_cb = pytest.mark.skipif(
    not aiotls.features()["client_hello_cb"], reason="extended OpenSSL access unavailable"
)
pytestmark = needs_hello_cb

# (max_version, secure_options): each way a session resumes.
RESUMPTIONS = {
    "tls12-ticket": ("TLSv1.2", 0),
    "tls12-session-id": ("TLSv1.2", OP_NO_TICKET),
    "tls13-ticket": ("TLSv1.3", 0),
}


class Recorder:
    """A stream handler that notes (servername, session_reused) and echoes one line."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, bool]] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = writer.get_extra_info("tls")
        self.seen.append((tls.servername, tls.session_reused))
        try:
            writer.write(await reader.readline())
            await reader.read()
        except (aiotls.TLSError, ConnectionError):
            pass  # a peer that leaves without close_notify is not under test here
        finally:
            writer.close()


async def _connect(port: int, ca_pem: str, servername: str, **kw: object) -> bytes | None:
    """One connection that exchanges a line; a fresh one returns its session."""
    sessions: list[bytes] = []
    reader, writer = await aiotls.open_connection(
        HOST, port, ca=ca_pem, servername=servername, on_session=sessions.append, **kw
    )
    writer.write(b"x\n")
    assert await reader.readline() == b"x\n"
    if not writer.get_extra_info("tls").session_reused:
        await eventually(lambda: sessions)  # TLS 1.3 tickets come after the handshake
    writer.close()
    await writer.wait_closed()
    return sessions[-1] if sessions else None


@pytest.mark.parametrize("how", RESUMPTIONS)
async def test_servername_on_full_and_resumed_handshakes(
    server_key_pem: str, server_chain_pem: str, ca_pem: str, how: str
) -> None:
    version, secure_options = RESUMPTIONS[how]
    ctx = aiotls.create_secure_context(
        key=server_key_pem, cert=server_chain_pem, secure_options=secure_options
    )
    record = Recorder()
    async with tls_server(record, ctx) as (_, port):
        session = await _connect(port, ca_pem, "localhost", max_version=version)
        await _connect(port, ca_pem, "localhost", max_version=version, session=session)
        # The SNI of this handshake, not the one the session was created with.
        await _connect(port, ca_pem, "example.test", max_version=version, session=session)
    assert record.seen == [("localhost", False), ("localhost", True), ("example.test", True)]


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
async def test_servername_with_openssl_s_client_sess_in(
    server_ctx: aiotls.SecureContext, server_files: dict[str, str], tmp_path, flag: str
) -> None:
    require("openssl")
    sess = str(tmp_path / "sess.pem")
    record = Recorder()
    async with tls_server(record, server_ctx) as (_, port):
        for option in ("-sess_out", "-sess_in"):
            argv = ["openssl", "s_client", "-connect", f"{HOST}:{port}", flag, option, sess,
                    "-CAfile", server_files["ca"], "-servername", "localhost"]  # fmt: skip
            async with run_peer(*argv) as peer:
                await peer.feed(b"ping\n", close=False)
                await peer.wait_for_output(r"^(ping)$")  # the echo: tickets came before it
                await peer.feed(b"", close=True)
                await peer.wait()
    assert record.seen == [("localhost", False), ("localhost", True)]


# -- nginx as a reverse proxy ----------------------------------------------------------

_PROXY_TO_UPSTREAM = """
        location / {{
            proxy_pass https://{host}:{upstream};
            proxy_http_version 1.1;
            proxy_ssl_server_name on;
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
            proxy_ssl_protocols {version};
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
        }}"""


async def _http_get(port: int) -> bytes:
    """The body of ``GET /`` over plain HTTP/1.1 (to nginx)."""
    async with asyncio.timeout(PEER_TIMEOUT):
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"GET / HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n")
        response = await reader.read()
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response
    return body


async def _answer_with_servername(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """An HTTP/1.1 upstream whose response body is "servername reused"."""
    tls = writer.get_extra_info("tls")
    body = f"{tls.servername} {tls.session_reused}".encode()
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )
        await writer.drain()
    except (aiotls.TLSError, ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


@pytest.mark.parametrize("how", RESUMPTIONS)
async def test_servername_behind_nginx_with_session_reuse(
    server_key_pem: str, server_chain_pem: str, server_files: dict[str, str], tmp_path, how: str
) -> None:
    """nginx (proxy_ssl_server_name, proxy_ssl_session_reuse) resumes its upstream
    sessions; every request must still see the SNI nginx sent."""
    version, secure_options = RESUMPTIONS[how]
    ctx = aiotls.create_secure_context(
        key=server_key_pem, cert=server_chain_pem, secure_options=secure_options
    )
    async with tls_server(_answer_with_servername, ctx, suppress_ragged_eofs=True) as (_, up):
        location = _PROXY_TO_UPSTREAM.format(
            host=HOST, upstream=up, version=version, ca=server_files["ca"]
        )
        async with run_nginx(tmp_path, location) as (_, port):
            bodies = [await _http_get(port) for _ in range(3)]
    assert bodies == [b"localhost False", b"localhost True", b"localhost True"]
