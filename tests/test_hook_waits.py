"""Handshakes that wait for an async hook: nothing piles up meanwhile, each hook runs once,
and an async on_new_session holds the connection until it is done (Node's newSession)."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from ocsp_util import PKI, build_response, make_pki
from peers import HOST, require, run_peer
from util import echo, eventually, tls_server

import aiotls

OP_NO_TICKET = 0x4000
needs_extended = pytest.mark.skipif(
    not aiotls.features()["resume_session"], reason="extended OpenSSL access unavailable"
)


def _rss() -> int:
    """This process's resident memory in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _client_hello(ca_pem: str, servername: str) -> bytes:
    client = aiotls.TLSEngine(aiotls.create_secure_context(ca=ca_pem), server_hostname=servername)
    client.do_handshake()
    return client.data_to_send()


def _flood(sock: socket.socket, total: int, chunk: bytes) -> int:
    """Send up to ``total`` bytes; stop early once the peer has read nothing for a second
    (it stopped reading) or dropped the connection. Returns the bytes sent."""
    sock.settimeout(1.0)
    sent = 0
    try:
        while sent < total:
            sent += sock.send(chunk[: total - sent])
    except OSError:  # a timeout (no progress), a reset or a broken pipe
        pass
    return sent


# -- item 2: no unbounded buffering while a server hook is pending -------------------


async def test_flood_during_a_pending_server_hook_is_not_buffered(server_ctx, ca_pem) -> None:
    """A ClientHello, then 100 MiB while sni_callback waits: the server stops reading."""
    entered, release = asyncio.Event(), asyncio.Event()
    failures: list[BaseException] = []

    async def sni(name: str | None) -> None:
        if name == "flood.test":
            entered.set()
            await release.wait()

    async with tls_server(
        echo, server_ctx, sni_callback=sni,
        on_tls_client_error=lambda exc, transport: failures.append(exc),
    ) as (_, port):  # fmt: skip
        chunk = bytes(1 << 20)
        sock = socket.create_connection((HOST, port))
        try:
            sock.sendall(_client_hello(ca_pem, "flood.test"))
            await entered.wait()
            before = _rss()
            sent = await asyncio.to_thread(_flood, sock, 100 << 20, chunk)
            grown = _rss() - before
            # Others are served while the hook still waits.
            reader, writer = await aiotls.open_connection(
                HOST, port, ca=ca_pem, servername="localhost"
            )
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            writer.close()
            release.set()
            await eventually(lambda: failures)
        finally:
            sock.close()
    assert grown < 4 << 20, f"server grew {grown >> 20} MiB while {sent >> 20} MiB arrived"
    assert sent < 100 << 20  # the flood stalled in the kernel's buffers
    assert len(failures) == 1 and isinstance(failures[0], aiotls.TLSError)  # failed cleanly


async def test_start_tls_with_a_buffered_client_hello_still_pauses_for_the_hook(
    server_ctx, ca_pem
) -> None:
    """STARTTLS whose ClientHello came with the command: reading pauses for the hook too."""
    entered, release = asyncio.Event(), asyncio.Event()
    failures: list[BaseException] = []

    async def sni(name: str | None) -> None:
        entered.set()
        await release.wait()

    async def upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        try:
            await aiotls.start_tls(writer, server_side=True, context=server_ctx, sni_callback=sni)
        except (aiotls.TLSError, ConnectionError) as exc:
            failures.append(exc)
        writer.close()

    server = await asyncio.start_server(upgrade, HOST, 0)
    sock = socket.create_connection(server.sockets[0].getsockname())
    try:
        sock.sendall(b"STARTTLS\n" + _client_hello(ca_pem, "localhost"))  # one segment
        await entered.wait()
        sent = await asyncio.to_thread(_flood, sock, 100 << 20, bytes(1 << 20))
        release.set()
        await eventually(lambda: failures)
    finally:
        sock.close()
        server.close()
        await server.wait_closed()
    assert sent < 100 << 20
    # Read only after the hook: the flood failed the handshake as garbage, not as a backlog.
    assert isinstance(failures[0], aiotls.TLSError)
    assert failures[0].code != "ERR_TLS_HANDSHAKE_FLOOD"


def test_engine_refuses_a_backlog_beyond_64_KiB_while_paused(server_ctx, ca_pem) -> None:
    """Defence in depth: a paused engine holds at most 64 KiB of unprocessed ciphertext."""
    server = aiotls.TLSEngine(server_ctx, server_side=True, pause_handshake=True)
    server.receive_data(_client_hello(ca_pem, "localhost"))
    assert server.handshake_paused
    server.receive_data(bytes(64 << 10))  # up to the bound: kept for after the hook
    with pytest.raises(aiotls.TLSError) as info:
        server.receive_data(b"\0")
    assert info.value.code == "ERR_TLS_HANDSHAKE_FLOOD"


# -- item 3: the client's async on_ocsp_response runs once, reading paused -----------


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
async def test_async_on_ocsp_response_once_while_the_server_talks_first(
    server_ctx, ca_pem, version
) -> None:
    big = 64 << 20
    wrote: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()

    async def talk_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(bytes(big))
        wrote.set_result(writer)
        await reader.read()  # until the client closes
        writer.close()

    calls: list[bytes | None] = []
    release = asyncio.Event()

    async def on_ocsp_response(response: bytes | None) -> None:
        calls.append(response)
        await release.wait()

    async with tls_server(talk_first, server_ctx) as (_, port):
        connecting = asyncio.create_task(
            aiotls.open_connection(
                HOST, port, ca=ca_pem, servername="localhost", max_version=version,
                request_ocsp=True, on_ocsp_response=on_ocsp_response,
            )
        )  # fmt: skip
        server_writer = await wrote  # the server's handshake is done; it wrote 64 MiB at once
        # The old code read on (and called the hook again per segment) while the hook ran.
        await eventually(lambda: len(calls) > 1, timeout=0.5)
        waiting_at_server = server_writer.transport.get_write_buffer_size()
        release.set()
        reader, writer = await connecting
        assert len(await reader.readexactly(big)) == big
        writer.close()
        await writer.wait_closed()
    assert calls == [None]  # once, and nothing was stapled
    # The client read nothing more while its hook ran: the bytes waited at the sender.
    assert waiting_at_server > big // 2


async def test_async_on_ocsp_response_once_with_openssl_s_server(tmp_path) -> None:
    """TLS 1.3: s_server's tickets arrive while the hook runs; it is still called once."""
    require("openssl")
    pki: PKI = make_pki(tmp_path)
    staple = build_response(pki.good.cert, pki.ca.cert, pki.ca.cert, pki.ca.key)
    status_file = tmp_path / "staple.der"
    status_file.write_bytes(staple)
    argv = ["openssl", "s_server", "-accept", f"{HOST}:0", "-tls1_3", "-naccept", "1",
            "-key", str(pki.good.key_path), "-cert", str(pki.good.cert_path),
            "-status_file", str(status_file), "-rev"]  # fmt: skip
    calls: list[bytes | None] = []
    release = asyncio.Event()

    async def on_ocsp_response(response: bytes | None) -> None:
        calls.append(response)
        await release.wait()

    async with run_peer(*argv) as peer:
        (port,) = await peer.wait_for_output(r"^ACCEPT .*:(\d+)$")
        connecting = asyncio.create_task(
            aiotls.open_connection(
                HOST, int(port), ca=pki.ca.cert_pem.decode(), servername="localhost",
                request_ocsp=True, on_ocsp_response=on_ocsp_response,
            )
        )  # fmt: skip
        await eventually(lambda: len(calls) > 1, timeout=0.5)  # the old code: tickets -> again
        release.set()
        reader, writer = await connecting
        writer.write(b"abc\n")
        assert await reader.readline() == b"cba\n"
        writer.close()
        await peer.kill()
    assert calls == [staple]


# -- item 7: an async on_new_session holds the connection ----------------------------


async def _echo_once(port: int, ca_pem: str, **kw: object) -> tuple[bytes | None, bool]:
    """Connect, echo one byte, close; the session and whether it was resumed."""
    reader, writer = await aiotls.open_connection(
        HOST, port, ca=ca_pem, servername="localhost", **kw
    )
    writer.write(b"x")
    await reader.readexactly(1)  # TLS 1.3 tickets come first
    tls = writer.get_extra_info("tls")
    session, reused = tls.get_session(), tls.session_reused
    writer.close()
    await writer.wait_closed()
    return session, reused


@needs_extended
@pytest.mark.parametrize(("version", "options", "sessions"), [
    ("TLSv1.2", {"secure_options": OP_NO_TICKET}, 1),  # a session id, resumed from the store
    ("TLSv1.3", {}, 2),  # two tickets
])  # fmt: skip
async def test_async_on_new_session_holds_the_connection_until_it_completes(
    server_key_pem, server_chain_pem, ca_pem, version, options, sessions
) -> None:
    store: dict[bytes, bytes] = {}
    events: list[str] = []
    release = asyncio.Event()

    async def on_new_session(session_id: bytes, data: bytes) -> None:
        events.append("new_session")
        await release.wait()
        store[session_id] = data
        events.append("stored")

    async def connect_then_reconnect_at_once() -> bool:
        session, _ = await _echo_once(port, ca_pem, max_version=version)
        _, reused = await _echo_once(port, ca_pem, max_version=version, session=session)
        return reused

    ctx = aiotls.create_secure_context(key=server_key_pem, cert=server_chain_pem, **options)
    async with tls_server(
        echo, ctx, on_new_session=on_new_session, on_resume_session=store.get,
        on_secure_connection=lambda transport: events.append("secure"),
    ) as (_, port):  # fmt: skip
        task = asyncio.create_task(connect_then_reconnect_at_once())
        # The old code let the client finish (and reconnect) while the store waited.
        await eventually(task.done, timeout=0.5)
        release.set()
        reused = await task
    assert reused
    first = ["new_session"] * sessions + ["stored"] * sessions + ["secure"]
    assert events[: len(first)] == first  # stored before the connection was reported secure
    resumed = ["new_session", "stored", "secure"] if version == "TLSv1.3" else ["secure"]
    assert events[len(first) :] == resumed  # once per new session (TLS 1.3: one new ticket)


async def test_a_failing_async_on_new_session_is_logged_and_the_connection_goes_on(
    server_ctx, ca_pem, caplog
) -> None:
    async def on_new_session(session_id: bytes, data: bytes) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("store down")

    async with tls_server(echo, server_ctx, on_new_session=on_new_session) as (_, port):
        with caplog.at_level("ERROR", logger="aiotls"):
            await _echo_once(port, ca_pem, max_version="TLSv1.3")
    assert any("store down" in repr(r.exc_info) for r in caplog.records)
