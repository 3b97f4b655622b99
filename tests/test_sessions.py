"""Sessions: client tickets, server session hooks, an external store, ticket keys, peers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap

import pytest
from peers import HOST, require, run_peer
from util import echo, eventually, tls_server

import aiotls

OP_NO_TICKET = 0x4000
needs_extended = pytest.mark.skipif(
    not aiotls.features()["resume_session"], reason="extended OpenSSL access unavailable"
)


def _server_ctx(key: str, chain: str, **options: object) -> aiotls.SecureContext:
    return aiotls.create_secure_context(key=key, cert=chain, **options)


async def _connect(port: int, ca_pem: str, **kw: object) -> aiotls.TLSTransport:
    reader, writer = await aiotls.open_connection(
        HOST, port, ca=ca_pem, servername="localhost", **kw
    )
    writer.write(b"x\n")  # a line: openssl s_server -rev answers per line
    # TLS 1.3 tickets arrive after the handshake, and before the server's answer.
    await reader.readuntil(b"\n")
    transport = writer.transport
    writer.close()
    await writer.wait_closed()
    return transport  # type: ignore[return-value]


@pytest.mark.parametrize(("version", "tickets"), [("TLSv1.2", 1), ("TLSv1.3", 2)])
async def test_client_on_session_and_resumption(server_ctx, ca_pem, version, tickets) -> None:
    sessions: list[bytes] = []
    async with tls_server(echo, server_ctx) as (_, port):
        first = await _connect(port, ca_pem, max_version=version, on_session=sessions.append)
        assert len(sessions) == tickets  # each TLS 1.3 ticket, or the TLS 1.2 session
        assert first.get_tls_ticket()
        again = await _connect(port, ca_pem, max_version=version, session=sessions[-1])
        assert again.session_reused and again.get_tls_protocol() is None  # closed by now
        fresh = await _connect(port, ca_pem, max_version=version)
        assert not fresh.session_reused


@pytest.mark.parametrize(("version", "options", "calls"), [
    ("TLSv1.3", {}, 2),  # a TLS 1.3 server issues two tickets per full handshake
    ("TLSv1.2", {"secure_options": OP_NO_TICKET}, 1),  # a session-id session
])  # fmt: skip
async def test_server_on_new_session(
    server_key_pem, server_chain_pem, ca_pem, version, options, calls
) -> None:
    seen: list[tuple[bytes, bytes]] = []
    ctx = _server_ctx(server_key_pem, server_chain_pem, **options)
    async with tls_server(echo, ctx, on_new_session=lambda sid, data: seen.append((sid, data))) as (
        _,
        port,
    ):
        await _connect(port, ca_pem, max_version=version)
        assert len(seen) == calls
        assert all(len(sid) == 32 and data for sid, data in seen)


@needs_extended
async def test_external_session_store_like_node_test_tls_session_cache(
    server_key_pem, server_chain_pem, ca_pem
) -> None:
    """Tickets off: one full handshake, 5 reconnects: 1 new session, 5 lookups, all resumed."""
    store: dict[bytes, bytes] = {}
    asked: list[bytes] = []

    async def resume(session_id: bytes) -> bytes | None:
        asked.append(session_id)
        await asyncio.sleep(0.01)  # an external store answers later; the handshake waits
        return store.get(session_id)

    ctx = _server_ctx(server_key_pem, server_chain_pem, secure_options=OP_NO_TICKET)
    async with tls_server(
        echo, ctx, on_new_session=store.__setitem__, on_resume_session=resume
    ) as (_, port):
        first = await _connect(port, ca_pem, max_version="TLSv1.2")
        session = first.get_session()
        assert not first.session_reused and len(store) == 1
        reused = [
            (await _connect(port, ca_pem, max_version="TLSv1.2", session=session)).session_reused
            for _ in range(5)
        ]
        assert reused == [True] * 5
        assert len(store) == 1 and asked == [next(iter(store))] * 5


@needs_extended
async def test_store_returning_junk_means_full_handshake(
    server_key_pem, server_chain_pem, ca_pem
) -> None:
    sessions: dict[bytes, bytes] = {}
    ctx = _server_ctx(server_key_pem, server_chain_pem, secure_options=OP_NO_TICKET)
    async with tls_server(
        echo, ctx, on_new_session=sessions.__setitem__, on_resume_session=lambda sid: b"junk" * 9
    ) as (_, port):
        session = (await _connect(port, ca_pem, max_version="TLSv1.2")).get_session()
        again = await _connect(port, ca_pem, max_version="TLSv1.2", session=session)
        assert not again.session_reused


_STORE_SERVER = textwrap.dedent(
    """
    import asyncio, json, sys
    import aiotls

    key, chain, store_path = sys.argv[1:4]

    def resume(session_id):
        with open(store_path) as f:
            data = json.load(f).get(session_id.hex())
        return bytes.fromhex(data) if data else None

    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    async def main():
        ctx = aiotls.create_secure_context(
            key=open(key).read(), cert=open(chain).read(), secure_options=0x4000)
        server = await aiotls.start_server(echo, "127.0.0.1", 0, context=ctx,
                                           on_resume_session=resume)
        print(server.address()["port"], flush=True)
        await asyncio.sleep(30)

    asyncio.run(main())
    """
)


@needs_extended
async def test_session_store_shared_by_two_server_processes(
    server_key_pem, server_chain_pem, server_files, ca_pem, tmp_path
) -> None:
    """Server A (this process) creates the session; server B (another process) resumes it."""
    store_path = tmp_path / "store.json"
    store: dict[str, str] = {}

    def save(session_id: bytes, data: bytes) -> None:
        store[session_id.hex()] = data.hex()
        store_path.write_text(json.dumps(store))

    ctx = _server_ctx(server_key_pem, server_chain_pem, secure_options=OP_NO_TICKET)
    async with tls_server(echo, ctx, on_new_session=save) as (_, port_a):
        session = (await _connect(port_a, ca_pem, max_version="TLSv1.2")).get_session()
    argv = [
        sys.executable,
        "-c",
        _STORE_SERVER,
        server_files["key"],
        server_files["cert"],
        str(store_path),
    ]
    async with run_peer(*argv) as server_b:
        (port_b,) = await server_b.wait_for_output(r"^(\d+)$")
        resumed = await _connect(int(port_b), ca_pem, max_version="TLSv1.2", session=session)
        assert resumed.session_reused
        await server_b.kill()


@needs_extended
@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
async def test_ticket_key_rotation_like_node_test_tls_ticket(server_ctx, ca_pem, version) -> None:
    async with tls_server(echo, server_ctx) as (server, port):
        old_keys = server.get_ticket_keys()
        assert len(old_keys) == 80
        sessions: list[bytes] = []
        await _connect(port, ca_pem, max_version=version, on_session=sessions.append)
        old_ticket = sessions[-1]
        live_reader, live_writer = await aiotls.open_connection(
            HOST, port, ca=ca_pem, servername="localhost", max_version=version
        )
        server.set_ticket_keys(os.urandom(80))
        with pytest.raises(ValueError):
            server.set_ticket_keys(b"short")  # and the new keys stay
        fresh: list[bytes] = []
        after = await _connect(
            port, ca_pem, max_version=version, session=old_ticket, on_session=fresh.append
        )
        assert not after.session_reused and fresh  # a full handshake and a new ticket
        live_writer.write(b"live")  # the live connection is unaffected
        assert await live_reader.readexactly(4) == b"live"
        server.set_ticket_keys(old_keys)
        assert (
            await _connect(port, ca_pem, max_version=version, session=old_ticket)
        ).session_reused
        live_writer.close()


@pytest.mark.timeout(30)
async def test_session_timeout(server_key_pem, server_chain_pem, ca_pem) -> None:
    ctx = _server_ctx(server_key_pem, server_chain_pem, session_timeout=3)  # whole seconds
    async with tls_server(echo, ctx) as (_, port):
        session = (await _connect(port, ca_pem)).get_session()
        assert (await _connect(port, ca_pem, session=session)).session_reused
        await asyncio.sleep(4.5)
        assert not (await _connect(port, ca_pem, session=session)).session_reused


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
async def test_openssl_s_client_sess_out_sess_in(server_ctx, server_files, tmp_path, flag) -> None:
    require("openssl")
    sess = str(tmp_path / "sess.pem")
    async with tls_server(echo, server_ctx) as (_, port):
        for option, expect in (("-sess_out", "New"), ("-sess_in", "Reused")):
            argv = ["openssl", "s_client", "-connect", f"{HOST}:{port}", flag, option, sess,
                    "-CAfile", server_files["ca"], "-servername", "localhost"]  # fmt: skip
            async with run_peer(*argv) as peer:
                await peer.wait_for_output(r"(Verify return code: 0)")
                if option == "-sess_out":  # TLS 1.3: written when the first ticket comes
                    await eventually(lambda: os.path.exists(sess) and os.path.getsize(sess) > 0)
                await peer.feed(b"", close=True)
                await peer.wait()
            assert f"{expect}, TLSv1" in peer.stdout.decode(errors="replace")


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
async def test_aiotls_client_resumes_with_openssl_s_server(server_files, ca_pem, version) -> None:
    require("openssl")
    argv = ["openssl", "s_server", "-accept", f"{HOST}:0", version,
            "-key", server_files["key"], "-cert", server_files["cert"],
            "-naccept", "2", "-rev"]  # fmt: skip
    async with run_peer(*argv) as peer:
        (port_text,) = await peer.wait_for_output(r"^ACCEPT .*:(\d+)$")
        port = int(port_text)
        sessions: list[bytes] = []
        first = await _connect(port, ca_pem, on_session=sessions.append)
        assert not first.session_reused and sessions
        second = await _connect(port, ca_pem, session=sessions[-1])
        assert second.session_reused
        await peer.kill()


async def test_aiotls_client_resumes_with_node_server(server_files, ca_pem) -> None:
    require("node")
    script = textwrap.dedent(
        """
        const tls = require('tls'), fs = require('fs');
        const server = tls.createServer({key: fs.readFileSync(process.argv[1]),
                                         cert: fs.readFileSync(process.argv[2])}, (s) => {
          console.log(JSON.stringify({reused: s.isSessionReused()}));
          s.pipe(s);
        });
        server.listen(0, '127.0.0.1', () => console.log('port ' + server.address().port));
        """
    )
    async with run_peer("node", "-e", script, server_files["key"], server_files["cert"]) as peer:
        (port,) = await peer.wait_for_output(r"^port (\d+)$")
        sessions: list[bytes] = []
        await _connect(int(port), ca_pem, on_session=sessions.append)
        resumed = await _connect(int(port), ca_pem, session=sessions[-1])
        assert resumed.session_reused
        await peer.wait_for_output(r'^(\{"reused":true\})$')
        await peer.kill()


@needs_extended
async def test_session_hooks_on_contexts_already_in_use(server_ctx, client_ctx) -> None:
    """Hooks wire OpenSSL callbacks into a shared context that has served connections."""
    async with tls_server(echo, server_ctx) as (_, port):
        await _connect_ctx(port, client_ctx)  # both contexts are now "used"
    async with tls_server(echo, server_ctx, on_resume_session=lambda sid: None) as (_, port):
        sessions: list[bytes] = []
        await _connect_ctx(port, client_ctx, on_session=sessions.append)
        assert sessions


async def _connect_ctx(port: int, ctx: aiotls.SecureContext, **kw: object) -> None:
    reader, writer = await aiotls.open_connection(
        HOST, port, context=ctx, servername="localhost", **kw
    )
    writer.write(b"x\n")
    await reader.readuntil(b"\n")  # the tickets came before the answer
    writer.close()
