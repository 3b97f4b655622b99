"""An ALPN selector (``alpn_protocols=callable``) may be a coroutine function.

The server pauses at the ClientHello, awaits the selector on the client's list and
SNI, and answers OpenSSL's ALPN callback from that choice. None, a protocol the
client did not offer, or a selector that raises ends the handshake with the
no_application_protocol alert; a raising selector is logged on ``aiotls``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import pytest
from peers import HOST, require, run_peer
from util import echo, eventually, tls_server

import aiotls

pytestmark = pytest.mark.skipif(
    not aiotls.features()["client_hello_cb"], reason="extended OpenSSL access unavailable"
)


async def _alpn(port: int, ca_pem: str, offer: list[str], servername: str = "localhost") -> Any:
    """The ALPN protocol the client sees (the handshake must succeed)."""
    reader, writer = await aiotls.open_connection(
        HOST, port, ca=ca_pem, servername=servername, alpn_protocols=offer
    )
    writer.write(b"x")
    await reader.readexactly(1)
    chosen = writer.get_extra_info("tls").alpn_protocol
    writer.close()
    return chosen


async def test_async_selector_chooses(server_ctx: aiotls.SecureContext, ca_pem: str) -> None:
    asked: list[tuple[list[str], str | None]] = []
    answer: asyncio.Future[str] | None = None

    async def select(offered: list[str], servername: str | None) -> str:
        nonlocal answer
        asked.append((offered, servername))
        answer = asyncio.get_running_loop().create_future()
        return await answer  # the handshake waits for it

    async with tls_server(echo, server_ctx, alpn_protocols=select) as (_, port):
        client = asyncio.ensure_future(_alpn(port, ca_pem, ["h2", "http/1.1"]))
        await eventually(lambda: answer is not None)
        assert answer is not None and not client.done()
        answer.set_result("http/1.1")
        assert await client == "http/1.1"
        answer = None
        client = asyncio.ensure_future(_alpn(port, ca_pem, ["h2"], servername="example.test"))
        await eventually(lambda: answer is not None)
        assert answer is not None
        answer.set_result("h2")
        assert await client == "h2"
    assert asked == [(["h2", "http/1.1"], "localhost"), (["h2"], "example.test")]


async def test_client_without_alpn_skips_the_selector(
    server_ctx: aiotls.SecureContext, ca_pem: str
) -> None:
    asked: list[object] = []

    async def select(offered: list[str], servername: str | None) -> str:
        asked.append(offered)
        return offered[0]

    async with tls_server(echo, server_ctx, alpn_protocols=select) as (_, port):
        reader, writer = await aiotls.open_connection(HOST, port, ca=ca_pem, servername="localhost")
        assert writer.get_extra_info("tls").alpn_protocol is False
        writer.close()
    assert asked == []


async def _refused(port: int, ca_pem: str) -> aiotls.TLSError:
    with pytest.raises(aiotls.TLSError) as info:
        await aiotls.open_connection(
            HOST, port, ca=ca_pem, servername="localhost", alpn_protocols=["h2"]
        )
    return info.value


@pytest.mark.parametrize("answer", [None, "spdy/3"])  # none, or one the client did not offer
async def test_async_selector_refusing_sends_no_application_protocol(
    server_ctx: aiotls.SecureContext, ca_pem: str, answer: str | None
) -> None:
    answered: list[str | None] = []
    failures: list[BaseException] = []

    async def select(offered: list[str], servername: str | None) -> str | None:
        await asyncio.sleep(0)
        answered.append(answer)
        return answer

    async with tls_server(
        echo,
        server_ctx,
        alpn_protocols=select,
        on_tls_client_error=lambda exc, transport: failures.append(exc),
    ) as (_, port):
        err = await _refused(port, ca_pem)
        assert "no application protocol" in str(err)  # the client got the alert
        await eventually(lambda: failures)
    assert answered == [answer]  # the refusal was the selector's, after it was awaited
    assert len(failures) == 1 and isinstance(failures[0], aiotls.TLSError)


def _plain_raises(offered: list[str], servername: str | None) -> str:
    raise RuntimeError("selector bug")


async def _async_raises(offered: list[str], servername: str | None) -> str:
    await asyncio.sleep(0)
    raise RuntimeError("selector bug")


@pytest.mark.parametrize("select", [_plain_raises, _async_raises])
async def test_raising_selector_alerts_and_is_logged(
    server_ctx: aiotls.SecureContext,
    ca_pem: str,
    caplog: pytest.LogCaptureFixture,
    select: Callable[..., Any],
) -> None:
    caplog.set_level(logging.ERROR, logger="aiotls")
    async with tls_server(echo, server_ctx, alpn_protocols=select) as (_, port):
        err = await _refused(port, ca_pem)
        assert "no application protocol" in str(err)
        await eventually(lambda: caplog.records)
        assert await _alpn(port, ca_pem, []) is False  # the server goes on serving
    (record,) = [r for r in caplog.records if r.exc_info and "selector" in r.getMessage()]
    assert record.name == "aiotls" and record.levelno == logging.ERROR
    assert record.exc_info is not None and "selector bug" in str(record.exc_info[1])


async def test_async_selector_with_openssl_s_client(
    server_ctx: aiotls.SecureContext, server_files: dict[str, str]
) -> None:
    require("openssl")

    async def select(offered: list[str], servername: str | None) -> str | None:
        await asyncio.sleep(0)
        return "http/1.1" if servername == "localhost" and "http/1.1" in offered else None

    async with tls_server(echo, server_ctx, alpn_protocols=select) as (_, port):
        for servername, expected in (("localhost", "ALPN protocol: http/1.1"),
                                     ("example.test", "no application protocol")):  # fmt: skip
            argv = ["openssl", "s_client", "-connect", f"{HOST}:{port}", "-alpn", "h2,http/1.1",
                    "-CAfile", server_files["ca"], "-servername", servername]  # fmt: skip
            async with run_peer(*argv) as peer:
                with contextlib.suppress(AssertionError):  # s_client may already have quit
                    await peer.feed(b"", close=True)
                await peer.wait()
            assert expected in bytes(peer.stdout + peer.stderr).decode(errors="replace")


async def test_without_extended_access_plain_selectors_still_work(
    server_key_pem: str,
    server_chain_pem: str,
    ca_pem: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No ClientHello callback: OpenSSL's ALPN callback asks a plain selector, as before
    (a raising one is logged); an async one is refused at the call that received it."""
    from aiotls._openssl import extended as _extended

    monkeypatch.setattr(_extended, "_library_path", lambda: "/nonexistent/_rust.abi3.so")
    monkeypatch.setattr(_extended, "_resolver", None)
    assert not aiotls.features()["client_hello_cb"]
    ctx = aiotls.create_secure_context(key=server_key_pem, cert=server_chain_pem)

    async def select_async(offered: list[str], servername: str | None) -> str:
        return offered[0]

    with pytest.raises(aiotls.TLSFeatureUnavailable, match="alpn_protocols"):
        await aiotls.start_server(echo, HOST, 0, context=ctx, alpn_protocols=select_async)

    def select(offered: list[str], servername: str | None) -> str:
        if servername == "example.test":
            raise RuntimeError("selector bug")
        return offered[-1]

    caplog.set_level(logging.ERROR, logger="aiotls")
    async with tls_server(echo, ctx, alpn_protocols=select) as (_, port):
        assert await _alpn(port, ca_pem, ["h2", "http/1.1"]) == "http/1.1"
        with pytest.raises(aiotls.TLSError, match="no application protocol"):
            await aiotls.open_connection(
                HOST, port, ca=ca_pem, servername="example.test", alpn_protocols=["h2"]
            )
    assert any(r.exc_info and "selector bug" in str(r.exc_info[1]) for r in caplog.records)
