"""Server hooks: SNI (callback and add_context), ALPN, keylog, hot reload."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import trustme
from peers import HOST, require, run_peer
from util import echo, eventually, tls_server

import aiotls


def _ctx_for(ca: trustme.CA, *names: str, **options: object) -> aiotls.SecureContext:
    leaf = ca.issue_cert(*names)
    return aiotls.create_secure_context(
        key=leaf.private_key_pem.bytes(),
        cert=b"".join(b.bytes() for b in leaf.cert_chain_pems),
        **options,
    )


async def _san(port: int, ca_pem: str, servername: str) -> str:
    reader, writer = await aiotls.open_connection(
        HOST, port, ca=ca_pem, servername=servername, reject_unauthorized=False
    )
    san = writer.get_extra_info("tls").get_peer_certificate()["subjectaltname"]
    writer.close()
    return str(san)


# -- SNI -----------------------------------------------------------------------------


async def test_add_context_wildcards_last_added_wins(
    server_ctx, ca: trustme.CA, ca_pem: str
) -> None:
    async with tls_server(echo, server_ctx) as (server, port):
        server.add_context("*.example.com", _ctx_for(ca, "*.example.com"))
        server.add_context("special.example.com", _ctx_for(ca, "special.example.com"))
        partial = ca.issue_cert("b1.example.org")
        server.add_context(
            "b*.example.org",  # an options dict works too
            {"key": partial.private_key_pem.bytes(), "cert": partial.cert_chain_pems[0].bytes()},
        )
        assert "DNS:b1.example.org" in await _san(port, ca_pem, "b1.example.org")
        assert "DNS:localhost" in await _san(port, ca_pem, "c1.example.org")
        assert "DNS:*.example.com" in await _san(port, ca_pem, "a.example.com")
        assert "DNS:*.example.com" in await _san(port, ca_pem, "A.EXAMPLE.COM")
        assert "DNS:special.example.com" in await _san(port, ca_pem, "special.example.com")
        # One label only: neither deeper names nor the bare domain match.
        assert "DNS:localhost" in await _san(port, ca_pem, "a.b.example.com")
        assert "DNS:localhost" in await _san(port, ca_pem, "example.com")
        server.add_context("*.example.com", _ctx_for(ca, "late.example.com"))
        assert "DNS:late.example.com" in await _san(port, ca_pem, "special.example.com")


@pytest.mark.parametrize("bad", ["raise", "wrong type"])
async def test_bad_sni_callback_fails_only_that_handshake(
    server_ctx, ca_pem: str, bad: str
) -> None:
    failures: list[tuple[BaseException, str | None]] = []

    def sni(name: str | None) -> object:
        if name == "bad.test":
            if bad == "raise":
                raise RuntimeError("boom")
            return "not a context"
        return None

    async with tls_server(
        echo,
        server_ctx,
        sni_callback=sni,
        on_tls_client_error=lambda exc, t: failures.append((exc, t.servername)),
    ) as (_, port):
        with pytest.raises((aiotls.TLSError, ConnectionError)):
            await aiotls.open_connection(HOST, port, ca=ca_pem, servername="bad.test")
        await eventually(lambda: failures, timeout=1)
        exc, servername = failures[0]
        assert isinstance(exc, aiotls.TLSError) and "Invalid SNI context" in str(exc)
        assert servername == "bad.test"
        assert "DNS:localhost" in await _san(port, ca_pem, "localhost")  # still serving


async def test_200_slow_async_sni_handshakes_run_concurrently(
    server_ctx, ca: trustme.CA, ca_pem: str
) -> None:
    other = _ctx_for(ca, "other.test")

    async def sni(name: str | None) -> aiotls.SecureContext | None:
        await asyncio.sleep(0.05)
        return other if name == "other.test" else None

    async with tls_server(echo, server_ctx, sni_callback=sni, backlog=512) as (_, port):
        client_ctx = aiotls.create_secure_context(ca=ca_pem)
        start = time.monotonic()

        async def one(i: int) -> str:
            name = "other.test" if i % 2 else "localhost"
            reader, writer = await aiotls.open_connection(
                HOST, port, context=client_ctx, servername=name
            )
            writer.close()
            return name

        names = await asyncio.gather(*[one(i) for i in range(200)])
        elapsed = time.monotonic() - start
        assert len(names) == 200
        # Serially that would be 200 x 50 ms = 10 s; concurrently it is one sleep
        # plus 400 handshakes of CPU on this small machine.
        assert elapsed < 5.0, elapsed


# -- ALPN ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_protocols", "client_protocols", "expected"),
    [
        (["h2", "http/1.1"], ["http/1.1", "h2"], "h2"),  # the server's order decides
        (["http/1.1"], ["h2", "http/1.1"], "http/1.1"),
        (None, ["h2"], False),  # server without ALPN: nothing negotiated, no failure
        (["h2"], None, False),  # client without ALPN
    ],
)
async def test_alpn_lists(
    server_key_pem, server_chain_pem, ca_pem, server_protocols, client_protocols, expected
) -> None:
    ctx = aiotls.create_secure_context(
        key=server_key_pem, cert=server_chain_pem, alpn_protocols=server_protocols
    )
    seen: list[str | bool] = []
    async with tls_server(
        echo, ctx, on_secure_connection=lambda t: seen.append(t.alpn_protocol)
    ) as (
        _,
        port,
    ):
        reader, writer = await aiotls.open_connection(
            HOST, port, ca=ca_pem, servername="localhost", alpn_protocols=client_protocols
        )
        assert writer.get_extra_info("tls").alpn_protocol == expected
        writer.write(b"x")
        await reader.readexactly(1)
        assert seen == [expected]
        writer.close()


async def test_alpn_no_overlap_is_a_fatal_alert(server_key_pem, server_chain_pem, ca_pem) -> None:
    ctx = aiotls.create_secure_context(
        key=server_key_pem, cert=server_chain_pem, alpn_protocols=["h2"]
    )
    async with tls_server(echo, ctx) as (_, port):
        with pytest.raises(aiotls.TLSError) as info:
            await aiotls.open_connection(
                HOST, port, ca=ca_pem, servername="localhost", alpn_protocols=["spdy/3"]
            )
        assert "no application protocol" in str(info.value)


async def test_alpn_select_callable(server_ctx, ca_pem) -> None:
    asked: list[tuple[list[str], str | None]] = []

    def select(offered: list[str], servername: str | None) -> str | None:
        asked.append((offered, servername))
        return None if "refuse" in offered else offered[-1]

    async with tls_server(echo, server_ctx, alpn_protocols=select) as (_, port):
        reader, writer = await aiotls.open_connection(
            HOST, port, ca=ca_pem, servername="localhost", alpn_protocols=["a", "b"]
        )
        assert writer.get_extra_info("tls").alpn_protocol == "b"
        assert asked == [(["a", "b"], "localhost")]
        writer.close()
        with pytest.raises(aiotls.TLSError):
            await aiotls.open_connection(
                HOST, port, ca=ca_pem, servername="localhost", alpn_protocols=["refuse"]
            )


@pytest.mark.parametrize("offer", ["http/1.1,h2", "spdy/1"])
async def test_alpn_against_openssl_s_client(
    server_key_pem, server_chain_pem, server_files, offer
) -> None:
    require("openssl")
    ctx = aiotls.create_secure_context(
        key=server_key_pem, cert=server_chain_pem, alpn_protocols=["h2", "http/1.1"]
    )
    async with tls_server(echo, ctx) as (_, port):
        argv = ["openssl", "s_client", "-connect", f"{HOST}:{port}", "-alpn", offer,
                "-CAfile", server_files["ca"], "-servername", "localhost"]  # fmt: skip
        async with run_peer(*argv) as peer:
            with contextlib.suppress(AssertionError):  # s_client may already have quit
                await peer.feed(b"", close=True)
            await peer.wait()
        out = bytes(peer.stdout + peer.stderr).decode(errors="replace")
        if offer == "spdy/1":
            assert "no application protocol" in out
        else:
            assert "ALPN protocol: h2" in out


# -- keylog and hot reload -----------------------------------------------------------


async def test_keylog_lines_both_sides(server_ctx, ca_pem, tmp_path, monkeypatch) -> None:
    server_lines: list[bytes] = []
    client_lines: list[bytes] = []
    logfile = tmp_path / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(logfile))

    async def async_hook(line: bytes) -> None:
        server_lines.append(line)

    async with tls_server(echo, server_ctx, on_keylog=async_hook) as (_, port):
        reader, writer = await aiotls.open_connection(
            HOST, port, ca=ca_pem, servername="localhost",
            on_keylog=client_lines.append, sslkeylogfile=True,
        )  # fmt: skip
        writer.write(b"x")
        await reader.readexactly(1)
        writer.close()
    labels = {line.split(b" ")[0] for line in client_lines}
    assert b"CLIENT_HANDSHAKE_TRAFFIC_SECRET" in labels and b"SERVER_TRAFFIC_SECRET_0" in labels
    assert all(line.endswith(b"\n") and line.count(b" ") == 2 for line in client_lines)
    assert sorted(server_lines) == sorted(client_lines)  # the same secrets, seen from both ends
    assert logfile.read_bytes().splitlines(keepends=True) == client_lines


async def test_set_secure_context_hot_reload(server_ctx, ca: trustme.CA, ca_pem) -> None:
    async with tls_server(echo, server_ctx) as (server, port):
        reader, writer = await aiotls.open_connection(HOST, port, ca=ca_pem, servername="localhost")
        server.set_secure_context(_ctx_for(ca, "localhost", "reloaded.test"))
        assert "DNS:reloaded.test" in await _san(port, ca_pem, "localhost")
        writer.write(b"still alive")  # the live connection keeps its old context
        assert await reader.readexactly(11) == b"still alive"
        assert (
            "DNS:reloaded.test"
            not in writer.get_extra_info("tls").get_peer_certificate()["subjectaltname"]
        )
        writer.close()


@pytest.mark.parametrize(("offer", "expected"), [("--http1.1", "http/1.1"), ("--http2", "h2")])
async def test_alpn_with_curl(
    server_key_pem, server_chain_pem, server_files, offer, expected
) -> None:
    """curl offers ALPN like a browser; the server's choice is what curl reports."""
    require("curl")
    ctx = aiotls.create_secure_context(
        key=server_key_pem, cert=server_chain_pem, alpn_protocols=["h2", "http/1.1"]
    )
    chosen: list[str | bool] = []

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chosen.append(writer.get_extra_info("tls").alpn_protocol)
        if chosen[-1] == "http/1.1":
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        writer.close()  # an h2 peer gets a close: only the negotiation is under test

    async with tls_server(http, ctx) as (_, port):
        argv = ["curl", "-sv", offer, "--cacert", server_files["ca"], "--max-time", "5",
                "--resolve", f"localhost:{port}:{HOST}", f"https://localhost:{port}/"]  # fmt: skip
        async with run_peer(*argv) as peer:
            await peer.wait()
    assert chosen == [expected]
    assert f"ALPN: server accepted {expected}" in peer.stderr.decode(errors="replace")


async def test_client_certificate_checked_against_the_sni_chosen_ca(
    server_ctx, ca: trustme.CA, ca_pem: str
) -> None:
    """The context SNI picks decides request_cert and the CA a client certificate needs."""
    other_ca = trustme.CA()
    secure = ca.issue_cert("secure.test")
    strict = aiotls.create_secure_context(
        key=secure.private_key_pem.bytes(),
        cert=secure.cert_chain_pems[0].bytes(),
        ca=other_ca.cert_pem.bytes(),
        request_cert=True,
    )
    async with tls_server(
        echo, server_ctx, sni_callback=lambda name: strict if name == "secure.test" else None
    ) as (_, port):
        for issuer, accepted in ((other_ca, True), (ca, False)):
            leaf = issuer.issue_cert("client@example.test")
            identity = {
                "key": leaf.private_key_pem.bytes(),
                "cert": leaf.cert_chain_pems[0].bytes(),
            }
            try:
                reader, writer = await aiotls.open_connection(
                    HOST, port, ca=ca_pem, servername="secure.test", **identity
                )
                writer.write(b"ping")
                ok = await asyncio.wait_for(reader.read(4), 5) == b"ping"
                writer.close()
            except (aiotls.TLSError, ConnectionError):
                ok = False
            assert ok is accepted
        # The default context asks for no certificate at all.
        reader, writer = await aiotls.open_connection(HOST, port, ca=ca_pem, servername="localhost")
        writer.close()
