"""on_client_hello: the server's first look at each ClientHello, over real connections.

The hook sees what the client sent (compared with the bytes a relay saw on the wire, and
with ja4plus's JA4 of them), may choose the context or refuse with an alert the client
reports, runs once per connection (not again after a HelloRetryRequest), and works with
sni_callback and the session store on TLS 1.2 and 1.3.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trustme
from peers import HOST, PEER_TIMEOUT, require, run_peer
from test_clienthello import alpn_body, build_hello, in_records, ja4plus_forms, ours, u16s, vec
from util import echo, eventually, tls_server

import aiotls
from aiotls import ClientHello, ClientHelloRefused

OP_NO_TICKET = 0x4000
pytestmark = pytest.mark.skipif(
    not aiotls.features()["client_hello_cb"], reason="extended OpenSSL access unavailable"
)


@contextlib.asynccontextmanager
async def relay(port: int) -> AsyncIterator[tuple[int, bytearray]]:
    """A TCP relay to ``port`` on 127.0.0.1 that records what clients send through it;
    yields (its port, the bytes seen client to server)."""
    seen = bytearray()
    tasks: list[asyncio.Task[None]] = []

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: bool) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if log:
                    seen.extend(data)
                writer.write(data)
                await writer.drain()
        writer.close()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(HOST, port)
        tasks.append(asyncio.create_task(pump(reader, up_writer, True)))
        tasks.append(asyncio.create_task(pump(up_reader, writer, False)))

    server = await asyncio.start_server(accept, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def exchange(port: int, ca_pem: str, **kw: Any) -> aiotls.TLSTransport:
    """A client connection that echoed one byte, closed; its transport."""
    kw.setdefault("servername", "localhost")
    reader, writer = await aiotls.open_connection(HOST, port, ca=ca_pem, **kw)
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    writer.close()
    await writer.wait_closed()
    return writer.transport  # type: ignore[return-value]


def recorder(asynchronous: bool, answer: object = None) -> tuple[Callable[..., Any], list[Any]]:
    """A plain or async on_client_hello that records each hello and gives ``answer``."""
    calls: list[ClientHello] = []

    def plain(hello: ClientHello) -> object:
        calls.append(hello)
        return answer

    async def coroutine(hello: ClientHello) -> object:
        await asyncio.sleep(0)
        return plain(hello)

    return (coroutine if asynchronous else plain), calls


@pytest.mark.parametrize("asynchronous", [False, True], ids=["plain", "async"])
@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
async def test_hook_sees_what_the_client_sent(
    server_ctx: aiotls.SecureContext, ca_pem: str, asynchronous: bool, version: str
) -> None:
    hook, calls = recorder(asynchronous)
    server_transports: list[aiotls.TLSTransport] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_transports.append(writer.transport)  # type: ignore[arg-type]
        await echo(reader, writer)

    async with (
        tls_server(handler, server_ctx, on_client_hello=hook) as (_, port),
        relay(port) as (relay_port, seen),
    ):
        client = await exchange(
            relay_port, ca_pem, alpn_protocols=["h2", "http/1.1"], max_version=version
        )
    assert client.get_extra_info("tls") is not None
    (hello,) = calls
    assert hello.server_name == "localhost"
    assert hello.alpn_protocols == ("h2", "http/1.1")
    assert (0x0304 in hello.supported_versions) == (version == "TLSv1.3")
    wire = ClientHello.from_records(bytes(seen))
    assert wire is not None and hello == wire
    assert ours(hello) == ja4plus_forms(bytes(seen[: 5 + len(wire.raw)]))
    (transport,) = server_transports
    assert transport.get_extra_info("client_hello") is hello
    assert transport.get_extra_info("tls").client_hello is hello


def other_ctx(ca: trustme.CA) -> aiotls.SecureContext:
    leaf = ca.issue_cert("other.test")
    return aiotls.create_secure_context(
        key=leaf.private_key_pem.bytes().decode(),
        cert=b"".join(blob.bytes() for blob in leaf.cert_chain_pems).decode(),
    )


@pytest.mark.parametrize("asynchronous", [False, True], ids=["plain", "async"])
async def test_returned_context_chooses_the_certificate(
    server_ctx: aiotls.SecureContext, ca: trustme.CA, ca_pem: str, asynchronous: bool
) -> None:
    """A SecureContext from the hook serves the connection; sni_callback is not asked."""
    other = other_ctx(ca)
    hook, calls = recorder(asynchronous, other)
    sni_asked: list[str | None] = []
    async with tls_server(
        echo, server_ctx, on_client_hello=hook, sni_callback=sni_asked.append
    ) as (_, port):
        client = await exchange(port, ca_pem, servername="other.test")
    assert len(calls) == 1 and sni_asked == []
    assert client.authorized
    cert = client.get_extra_info("tls").get_peer_certificate()
    assert cert is None or "other.test" in cert["subjectaltname"]


async def test_sni_callback_and_store_after_the_hook_tls12(
    server_key_pem: str, server_chain_pem: str, ca_pem: str
) -> None:
    """None from the hook goes on: sni_callback and on_resume_session decide as usual."""
    ctx = aiotls.create_secure_context(
        key=server_key_pem, cert=server_chain_pem, secure_options=OP_NO_TICKET
    )
    hook, calls = recorder(True)
    store: dict[bytes, bytes] = {}
    sni_asked: list[str | None] = []

    def sni(name: str | None) -> None:
        sni_asked.append(name)

    async with tls_server(
        echo,
        ctx,
        on_client_hello=hook,
        sni_callback=sni,
        on_new_session=store.__setitem__,
        on_resume_session=store.get,
    ) as (_, port):
        sessions: list[bytes] = []
        first = await exchange(port, ca_pem, max_version="TLSv1.2", on_session=sessions.append)
        again = await exchange(port, ca_pem, max_version="TLSv1.2", session=sessions[-1])
    assert not first.session_reused and again.session_reused
    assert len(calls) == 2 and calls[1].session_id in store
    assert sni_asked[:1] == ["localhost"]  # the full handshake's (a resumption may skip it)


async def test_ticket_resumption_after_the_hook_tls13(
    server_ctx: aiotls.SecureContext, ca_pem: str
) -> None:
    hook, calls = recorder(False)
    async with tls_server(echo, server_ctx, on_client_hello=hook) as (_, port):
        sessions: list[bytes] = []
        await exchange(port, ca_pem, on_session=sessions.append)
        again = await exchange(port, ca_pem, session=sessions[-1])
    assert again.session_reused
    assert len(calls) == 2 and calls[1].offers_psk


async def test_called_once_across_a_hello_retry_request(
    server_key_pem: str, server_chain_pem: str, ca_pem: str
) -> None:
    """A server that prefers P-256 answers an X25519-only key share with a
    HelloRetryRequest; the second ClientHello does not call the hook again."""
    ctx = aiotls.create_secure_context(
        key=server_key_pem, cert=server_chain_pem, ecdh_curve="P-256"
    )
    hook, calls = recorder(True)
    async with tls_server(echo, ctx, on_client_hello=hook) as (_, port):
        client = await exchange(port, ca_pem, ecdh_curve="X25519:P-256")
    (hello,) = calls
    assert 23 not in hello.key_share_groups  # secp256r1: no share, so a retry was needed
    assert client.get_extra_info("tls").get_ephemeral_key_info()["name"] == "prime256v1"


@pytest.mark.parametrize(
    ("answer", "alert"),
    [
        (ClientHelloRefused(), "handshake failure"),
        (ClientHelloRefused("access_denied", "not you"), "access denied"),
        (ClientHelloRefused(112), "unrecognized name"),
    ],
    ids=["default", "named", "number"],
)
@pytest.mark.parametrize("how", ["returned", "raised"])
async def test_refusal_ends_the_handshake_with_its_alert(
    server_ctx: aiotls.SecureContext,
    ca_pem: str,
    answer: ClientHelloRefused,
    alert: str,
    how: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def hook(hello: ClientHello) -> ClientHelloRefused:
        if how == "raised":
            raise answer
        return answer

    caplog.set_level(logging.INFO, logger="aiotls")
    async with tls_server(echo, server_ctx, on_client_hello=hook) as (_, port):
        with pytest.raises(aiotls.TLSError) as info:
            await exchange(port, ca_pem)
        await eventually(lambda: _logged(caplog, "ERR_TLS_CLIENT_HELLO_REFUSED"))
    assert alert in str(info.value)
    (record,) = [r for r in caplog.records if "ERR_TLS_CLIENT_HELLO_REFUSED" in r.getMessage()]
    assert record.levelno == logging.INFO and answer.alert_name in record.getMessage()


async def test_s_client_sees_the_refusal_alert(
    server_ctx: aiotls.SecureContext, server_files: dict[str, str]
) -> None:
    openssl = require("openssl")

    def hook(hello: ClientHello) -> None:
        raise ClientHelloRefused("access_denied")

    async with (
        tls_server(echo, server_ctx, on_client_hello=hook) as (_, port),
        run_peer(
            openssl, "s_client", "-connect", f"{HOST}:{port}", "-servername", "localhost",
            "-CAfile", server_files["ca"], "-brief",
        ) as client,
    ):  # fmt: skip
        await client.feed(b"")
        assert await client.wait() != 0
        await client.wait_for_output(r"(alert access denied)", stream="stderr")


async def test_hook_failure_is_internal_error_logged_at_error(
    server_ctx: aiotls.SecureContext, ca_pem: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def hook(hello: ClientHello) -> None:
        raise RuntimeError("store down")

    async with tls_server(echo, server_ctx, on_client_hello=hook) as (_, port):
        with pytest.raises(aiotls.TLSError, match="internal error"):
            await exchange(port, ca_pem)
        await eventually(lambda: _logged(caplog, "ERR_TLS_HOOK"))
    (record,) = [r for r in caplog.records if "ERR_TLS_HOOK" in r.getMessage()]
    assert record.levelno == logging.ERROR and "store down" in record.getMessage()


async def test_unparsable_hello_ends_with_decode_error(
    server_ctx: aiotls.SecureContext, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenSSL reads ALPN only after the ClientHello callback, so a hello whose ALPN
    list holds an empty name reaches the callback; the parser refuses it: decode_error."""
    caplog.set_level(logging.INFO, logger="aiotls")
    hook, calls = recorder(False)
    extensions = [
        (10, vec(u16s([23]), 2)),  # supported_groups: secp256r1
        (11, vec(b"\x00", 1)),  # ec_point_formats: uncompressed
        (13, vec(u16s([0x0403, 0x0804]), 2)),  # signature_algorithms
        (16, alpn_body([b"h2", b""])),
    ]
    hello = build_hello([0xC02B, 0xC02F], extensions, random=bytes(range(32)))
    async with tls_server(echo, server_ctx, on_client_hello=hook) as (_, port):
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(in_records(hello))
        answer = await asyncio.wait_for(reader.read(7), PEER_TIMEOUT)
        writer.close()
        await eventually(lambda: _logged(caplog, "ERR_TLS_INVALID_CLIENT_HELLO"))
    assert answer[:1] == b"\x15" and answer[5:7] == b"\x02\x32"  # fatal decode_error
    assert calls == []
    (record,) = [r for r in caplog.records if "ERR_TLS_INVALID_CLIENT_HELLO" in r.getMessage()]
    assert record.levelno == logging.INFO


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


async def test_configuration_errors_raise_where_given(server_ctx: aiotls.SecureContext) -> None:
    with pytest.raises(ValueError, match="alert"):
        ClientHelloRefused("no_such_alert")
    with pytest.raises(ValueError, match="alert"):
        ClientHelloRefused(300)
    with pytest.raises(TypeError, match="on_client_hello"):
        await aiotls.start_server(echo, HOST, 0, context=server_ctx, on_client_hello=5)


def test_engine_keeps_a_long_hello_beyond_the_handshake_backlog(
    server_ctx: aiotls.SecureContext,
) -> None:
    """A 100 KB ClientHello (30,000 cipher suites and a padding extension) in 16 KiB
    records: more than the 64 KiB a handshake may leave unprocessed, but OpenSSL reads
    each record as it completes, so the engine pauses with the whole hello parsed, and
    drops its copy."""
    extensions = [
        (10, vec(u16s([23]), 2)),
        (13, vec(u16s([0x0403, 0x0804]), 2)),
        (21, bytes(40_000)),  # padding (RFC 7685)
    ]
    unknown = [s for s in range(0x6000, 0x6000 + 30_000) if s >> 8 != 0xC0]
    hello = build_hello([0xC02B, 0xC02F, *unknown], extensions, random=bytes(range(32)))
    records = in_records(hello)
    assert len(records) > 90_000  # beyond the 64 KiB backlog bound
    engine = aiotls.TLSEngine(server_ctx, server_side=True, inspect_client_hello=True)
    status = None
    for i in range(0, len(records), 4096):
        status = engine.receive_data(records[i : i + 4096])
    assert status is not None and status.paused == "client_hello"
    assert engine.client_hello_pending and engine.hello is not None
    assert engine.hello.extension(21) == bytes(40_000) and engine.hello.raw == hello
    assert engine._hello_copy is None
