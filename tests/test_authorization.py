"""Who is authorized, and what a refusal says: the servername rule (sock=, path=,
start_tls), identity on resumed sessions, async identity checks, Node's wording for
untrusted certificates, and peers that do not speak TLS."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from parity import Pki, node_client, refused, serving
from peers import HOST
from test_parity_info import bad_servers
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
        writer.write(b"220 ready\n")
        assert await reader.readline() == b"STARTTLS\n"
        await aiotls.start_tls(writer, server_side=True, context=server_ctx)
        await echo(reader, writer)

    server = await asyncio.start_server(handler, HOST, 0)
    async with server:
        reader, writer = await asyncio.open_connection(HOST, server.sockets[0].getsockname()[1])
        await eventually(lambda: reader._buffer)  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match="servername"):
            await aiotls.start_tls(writer, ca=ca_pem)
        # The connection is untouched: still plaintext, and nothing read was lost.
        assert await asyncio.wait_for(reader.readline(), 5) == b"220 ready\n"
        writer.write(b"STARTTLS\n")
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


# -- what an untrusted certificate says: Node's words, the code, whose, a hint ---------


@pytest.fixture(scope="module")
def root() -> trustme.CA:
    return trustme.CA()


def untrusted_servers(root: trustme.CA) -> dict[str, Pki]:
    """Servers a client trusting ``root`` refuses, by the code it refuses them with."""
    servers = {code: pki for code, (pki, name) in bad_servers(root).items() if name == "localhost"}
    stranger = trustme.CA()
    leaf = Pki.of(stranger, stranger.issue_cert("localhost"))
    servers["SELF_SIGNED_CERT_IN_CHAIN"] = Pki(  # the server sends its root too
        leaf.key, leaf.chain + stranger.cert_pem.bytes().decode(), leaf.ca_pem
    )
    return servers


# code -> (the certificate at fault: leaf or last in the chain sent, the hint's words)
FAULTS = {
    "DEPTH_ZERO_SELF_SIGNED_CERT": (0, "pass it as ca="),
    "UNABLE_TO_VERIFY_LEAF_SIGNATURE": (0, "the CA that issued it as ca="),
    "UNABLE_TO_GET_ISSUER_CERT_LOCALLY": (-1, "the CA that issued it as ca="),
    "SELF_SIGNED_CERT_IN_CHAIN": (-1, "the CA that issued it as ca="),
    "CERT_HAS_EXPIRED": (0, "renew it, or check this machine's clock"),
}


@pytest.mark.parametrize("code", list(FAULTS))
async def test_untrusted_certificate_says_what_node_says(
    code: str, root: trustme.CA, tmp_path: Path
) -> None:
    from cryptography import x509

    pki = untrusted_servers(root)[code]
    root_file = tmp_path / "root.pem"
    root_file.write_bytes(root.cert_pem.bytes())
    async with serving(**pki.identity()) as served:
        (report,) = await node_client(
            {"port": served.port, "servername": "localhost", "ca": str(root_file)}
        )
        exc = await refused(served.port, ca=root.cert_pem.bytes())
    assert report["error"] == code
    assert isinstance(exc, aiotls.TLSCertificateError) and exc.code == code
    message = str(exc)
    assert message.startswith(f"{report['message']} ({code}): the server's certificate ")
    assert exc.reason == report["message"]  # OpenSSL's text, which node prints
    index, hint = FAULTS[code]
    fault = x509.load_pem_x509_certificates(pki.chain.encode())[index]
    assert repr(fault.subject.rfc4514_string()) in message
    assert f"issued by {fault.issuer.rfc4514_string()!r}" in message
    assert hint in message


async def test_untrusted_client_certificate_names_the_server_ca_option(
    server_key_pem: str, server_chain_pem: str, ca_pem: str
) -> None:
    ctx = aiotls.create_secure_context(
        key=server_key_pem, cert=server_chain_pem, ca=ca_pem, request_cert=True,
        max_version="TLSv1.2",
    )  # fmt: skip
    stranger = trustme.CA().issue_cert("stranger", common_name="stranger")
    failures: list[BaseException] = []
    async with tls_server(echo, ctx, on_tls_client_error=lambda exc, t: failures.append(exc)) as (
        _,
        port,
    ):
        with pytest.raises((aiotls.TLSError, ConnectionError)):
            await aiotls.open_connection(
                HOST, port, ca=ca_pem, servername="localhost",
                key=stranger.private_key_pem.bytes(), cert=stranger.cert_chain_pems[0].bytes(),
            )  # fmt: skip
        await eventually(lambda: failures)
    (exc,) = failures
    assert isinstance(exc, aiotls.TLSCertificateError)
    # OpenSSL refuses in the handshake, at the first error it meets: the leaf's issuer.
    assert exc.code == "UNABLE_TO_GET_ISSUER_CERT_LOCALLY"
    assert str(exc).startswith(
        "unable to get local issuer certificate (UNABLE_TO_GET_ISSUER_CERT_LOCALLY):"
        " the client's certificate 'CN=stranger"
    )
    assert str(exc).endswith("issued by the CAs in its ca= option")


# -- peers that do not speak TLS -----------------------------------------------------

PlainHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def http_400(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An HTTP server's answer to a ClientHello (nginx answers a TLS client so)."""
    header = await reader.readexactly(5)
    await reader.readexactly(int.from_bytes(header[3:5], "big"))
    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    await reader.read()  # until the client hangs up (closing first could reset the answer)
    writer.close()


async def smtp_banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 mail.example.test ESMTP ready\r\n")
    await reader.read()
    writer.close()


async def plain_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
    writer.close()


@pytest.mark.parametrize(
    ("handler", "words", "code"),
    [
        (http_400, "it answered like an HTTP server: 'HTTP/1.1 400 Bad Request'",
         "ERR_SSL_WRONG_VERSION_NUMBER"),
        (smtp_banner, "its first bytes are not a TLS record: b'220 mail.example'",
         "ERR_SSL_WRONG_VERSION_NUMBER"),
        (plain_echo, "it sent our ClientHello back, like a plain echo server",
         "ERR_SSL_UNEXPECTED_MESSAGE"),
    ],
    ids=["http", "smtp", "echo"],
)  # fmt: skip
async def test_a_peer_that_does_not_speak_tls_is_named(
    handler: PlainHandler, words: str, code: str
) -> None:
    server = await asyncio.start_server(handler, HOST, 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(aiotls.TLSError) as info:
            await aiotls.open_connection(HOST, port, servername="localhost")
    assert info.value.code == code
    assert str(info.value).startswith(f"the peer does not speak TLS ({words}); OpenSSL: ")


async def test_a_plain_http_client_is_named(server_ctx) -> None:
    failures: list[BaseException] = []
    async with tls_server(
        echo, server_ctx, on_tls_client_error=lambda exc, t: failures.append(exc)
    ) as (_, port):
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await reader.read()  # the server hangs up
        writer.close()
        await eventually(lambda: failures)
    (exc,) = failures
    assert isinstance(exc, aiotls.TLSError) and exc.code == "ERR_SSL_HTTP_REQUEST"
    assert str(exc).startswith(
        "the peer does not speak TLS (it sent a plain HTTP request: 'GET / HTTP/1.1')"
    )
