"""on_resume_session: asked only when the handshake can end on TLS 1.2 or lower, and a
store that fails (raises, or gives no answer in time) means a full handshake, never a
failed connection."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
from peers import HOST
from util import echo, tls_server

import aiotls
from aiotls._aio import transport

OP_NO_TICKET = 0x4000
pytestmark = pytest.mark.skipif(
    not aiotls.features()["resume_session"], reason="extended OpenSSL access unavailable"
)


def _ctx(key: str, chain: str, **options: object) -> aiotls.SecureContext:
    return aiotls.create_secure_context(key=key, cert=chain, secure_options=OP_NO_TICKET, **options)


async def _connect(port: int, ca_pem: str, **kw: Any) -> aiotls.TLSTransport:
    """A connection that exchanged a byte (so the handshake is over on both ends)."""
    reader, writer = await aiotls.open_connection(
        HOST, port, ca=ca_pem, servername="localhost", **kw
    )
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    transport = writer.transport
    writer.close()
    await writer.wait_closed()
    return transport  # type: ignore[return-value]


async def test_tls13_client_hellos_are_not_looked_up(
    server_key_pem: str, server_chain_pem: str, ca_pem: str
) -> None:
    """A TLS 1.3 ClientHello's session id is a compatibility id: no store round trip."""
    asked: list[bytes] = []
    async with tls_server(
        echo,
        aiotls.create_secure_context(key=server_key_pem, cert=server_chain_pem),
        on_resume_session=lambda sid: asked.append(sid),
    ) as (_, port):
        sessions: list[bytes] = []
        first = await _connect(port, ca_pem, on_session=sessions.append)
        assert first.get_extra_info("tls").get_tls_protocol() is None  # closed
        resumed = await _connect(port, ca_pem, session=sessions[-1])
        assert resumed.session_reused  # by ticket, without the store
    assert asked == []


@pytest.mark.parametrize(
    ("server", "client"),
    [({}, {"max_version": "TLSv1.2"}), ({"max_version": "TLSv1.2"}, {})],
    ids=["tls12-client", "tls12-server"],
)
async def test_store_asked_when_the_handshake_can_end_on_tls12(
    server_key_pem: str,
    server_chain_pem: str,
    ca_pem: str,
    server: dict[str, str],
    client: dict[str, str],
) -> None:
    store: dict[bytes, bytes] = {}
    asked: list[bytes] = []

    async def resume(session_id: bytes) -> bytes | None:
        asked.append(session_id)
        return store.get(session_id)

    ctx = _ctx(server_key_pem, server_chain_pem, **server)
    async with tls_server(
        echo, ctx, on_new_session=store.__setitem__, on_resume_session=resume
    ) as (_, port):
        first = await _connect(port, ca_pem, **client)
        resumed = await _connect(port, ca_pem, session=first.get_session(), **client)
    assert resumed.session_reused
    assert asked[-1] in store  # the last lookup found the session it resumed
    # A TLS 1.2-only client sends no id without a session; a TLS 1.3-capable one sends
    # a compatibility id, asked about because this server stops at TLS 1.2.
    assert len(asked) == (1 if client else 2)


def _plain_raises(session_id: bytes) -> bytes:
    raise ConnectionError("store down")


async def _async_raises(session_id: bytes) -> bytes:
    await asyncio.sleep(0)
    raise ConnectionError("store down")


@pytest.mark.parametrize("resume", [_plain_raises, _async_raises])
async def test_raising_store_means_full_handshake_and_a_warning(
    server_key_pem: str,
    server_chain_pem: str,
    ca_pem: str,
    caplog: pytest.LogCaptureFixture,
    resume: Callable[[bytes], Any],
) -> None:
    caplog.set_level(logging.WARNING, logger="aiotls")
    failures: list[BaseException] = []
    ctx = _ctx(server_key_pem, server_chain_pem)
    async with tls_server(
        echo, ctx, on_resume_session=resume, on_tls_client_error=lambda e, t: failures.append(e)
    ) as (_, port):
        session = (await _connect(port, ca_pem, max_version="TLSv1.2")).get_session()
        again = await _connect(port, ca_pem, max_version="TLSv1.2", session=session)
    assert not again.session_reused and failures == []
    (record,) = [r for r in caplog.records if "on_resume_session" in r.getMessage()]
    assert record.name == "aiotls" and record.levelno == logging.WARNING
    assert record.exc_info is not None and "store down" in str(record.exc_info[1])


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("handshake_timeout", "cap", "bound"),
    [(1.0, None, 0.5), (60.0, 0.3, 0.3)],  # half the handshake time left, or the cap
    ids=["half-of-handshake-timeout", "session-store-wait"],
)
async def test_store_that_never_answers_means_full_handshake_after_the_bound(
    server_key_pem: str,
    server_chain_pem: str,
    ca_pem: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    handshake_timeout: float,
    cap: float | None,
    bound: float,
) -> None:
    if cap is not None:
        monkeypatch.setattr(transport, "SESSION_STORE_WAIT", cap)
    caplog.set_level(logging.WARNING, logger="aiotls")
    asked: list[bytes] = []
    cancelled = asyncio.Event()

    async def resume(session_id: bytes) -> bytes | None:
        asked.append(session_id)
        try:
            await asyncio.Event().wait()  # an outage: no answer, ever
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return None

    ctx = _ctx(server_key_pem, server_chain_pem)
    async with tls_server(
        echo, ctx, on_resume_session=resume, handshake_timeout=handshake_timeout
    ) as (_, port):
        session = (await _connect(port, ca_pem, max_version="TLSv1.2")).get_session()
        loop = asyncio.get_running_loop()
        start = loop.time()
        again = await _connect(port, ca_pem, max_version="TLSv1.2", session=session)
        waited = loop.time() - start
        await asyncio.wait_for(cancelled.wait(), 1)  # the store's call was given up
    assert not again.session_reused and len(asked) == 1  # a full handshake, no timeout
    (record,) = [r for r in caplog.records if "on_resume_session" in r.getMessage()]
    assert record.levelno == logging.WARNING
    match = re.search(r"no answer within ([\d.]+) s", record.getMessage())
    assert match is not None and bound - 0.05 < float(match[1]) <= bound
    assert float(match[1]) <= waited < handshake_timeout
