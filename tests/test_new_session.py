"""on_new_session fires for every full handshake that creates a resumable session,
with TLS 1.2 tickets too (OpenSSL reports only sessions that have an id, and leaves
a TLS 1.2 ticket session without one)."""

from __future__ import annotations

import pytest
from peers import HOST
from util import echo, eventually, tls_server

import aiotls

OP_NO_TICKET = 0x4000
pytestmark = pytest.mark.skipif(
    not aiotls.features()["new_session_cb"], reason="extended OpenSSL access unavailable"
)


async def _connect(port: int, ca_pem: str, **kw: object) -> aiotls.TLSTransport:
    sessions: list[bytes] = []
    reader, writer = await aiotls.open_connection(
        HOST, port, ca=ca_pem, servername="localhost", on_session=sessions.append, **kw
    )
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    if not writer.get_extra_info("tls").session_reused:
        await eventually(lambda: sessions)  # TLS 1.3 tickets come after the handshake
    writer.close()
    await writer.wait_closed()
    return writer.transport  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("version", "secure_options", "per_handshake"),
    [
        ("TLSv1.2", 0, 1),  # a ticket, and now an id beside it
        ("TLSv1.2", OP_NO_TICKET, 1),  # a session id
        ("TLSv1.3", 0, 2),  # two tickets per full handshake, each its own session
    ],
    ids=["tls12-tickets", "tls12-no-tickets", "tls13"],
)
async def test_on_new_session_per_full_handshake(
    server_key_pem: str,
    server_chain_pem: str,
    ca_pem: str,
    version: str,
    secure_options: int,
    per_handshake: int,
) -> None:
    seen: list[tuple[bytes, bytes]] = []
    ctx = aiotls.create_secure_context(
        key=server_key_pem, cert=server_chain_pem, secure_options=secure_options
    )
    async with tls_server(echo, ctx, on_new_session=lambda sid, data: seen.append((sid, data))) as (
        _,
        port,
    ):
        for full in range(1, 3):
            first = await _connect(port, ca_pem, max_version=version)
            assert not first.session_reused
            assert len(seen) == full * per_handshake  # reported before the tickets went out
        if version == "TLSv1.2":  # a resumed TLS 1.2 handshake creates no session
            resumed = await _connect(port, ca_pem, max_version=version, session=first.get_session())
            assert resumed.session_reused and len(seen) == 2 * per_handshake
    assert all(len(sid) == 32 and data for sid, data in seen)
    assert len({sid for sid, _ in seen}) == len(seen)
