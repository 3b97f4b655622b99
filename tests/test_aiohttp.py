"""aiotls.aiohttp: TLSSite and TLSConnector, aiohttp client and server over aiotls.

Every test runs real handshakes over 127.0.0.1 with trustme certificates; the
server's view of each connection is recorded by its ``on_secure_connection`` hook
or read from ``request.transport`` in the handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from peers import HOST
from util import eventually

import aiotls
from aiotls import ocsp, pki
from aiotls.aiohttp import TLSConnector, TLSSite, run_app

#: Far beyond aiohttp's read buffer: flow control holds a response's connection until
#: its body is read, so the client can look at that connection first (client_view).
PADDING = "x" * (1 << 20)


async def info(request: web.Request) -> web.Response:
    """What the server sees of this request's connection (and PADDING). Behind a
    stdlib ssl server there is no "tls" view: only the asyncio keys are reported."""
    assert request.transport is not None
    tls = request.transport.get_extra_info("tls")
    seen = {
        "secure": request.secure,
        "scheme": request.scheme,
        "peercert": request.transport.get_extra_info("peercert"),
        "padding": PADDING,
    }
    if tls is not None:
        seen |= {
            "protocol": tls.get_protocol(),
            "alpn": tls.alpn_protocol,
            "servername": tls.servername,
            "authorized": tls.authorized,
            "reused": tls.session_reused,
        }
    return web.json_response(seen)


def info_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", info)
    return app


@contextlib.asynccontextmanager
async def serving(app: web.Application, **tls_options: Any) -> AsyncIterator[TLSSite]:
    """``app`` on a started TLSSite on 127.0.0.1 (a free port); cleaned up on exit."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = TLSSite(runner, HOST, 0, **tls_options)
        await site.start()
        yield site
    finally:
        await runner.cleanup()


def identity(cert: trustme.LeafCert) -> dict[str, bytes]:
    """``key`` and ``cert`` options for a trustme leaf."""
    return {"key": cert.private_key_pem.bytes(), "cert": cert.cert_chain_pems[0].bytes()}


def client_view(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """What the client sees of the connection a response came on (call before reading
    the body: aiohttp lets go of the connection once the body is in)."""
    assert resp.connection is not None and resp.connection.transport is not None
    tls = resp.connection.transport.get_extra_info("tls")
    return {
        "protocol": tls.get_protocol(),
        "alpn": tls.alpn_protocol,
        "reused": tls.session_reused,
        "authorized": tls.authorized,
    }


async def test_client_and_server_over_aiotls(server_key_pem, server_chain_pem, ca_pem, client_cert):
    """A TLSConnector client with a certificate against a TLSSite asking for one: the
    request sees https and the client certificate, ALPN is http/1.1 on both sides, the
    server's session hook fires, the key log fills, and a new connection resumes."""
    secured: list[aiotls.TLSTransport] = []
    new_sessions: list[bytes] = []
    keylog: list[bytes] = []
    async with serving(
        info_app(),
        key=server_key_pem,
        cert=server_chain_pem,
        ca=ca_pem,
        request_cert=True,
        on_secure_connection=secured.append,
        on_new_session=lambda session_id, data: new_sessions.append(session_id),
    ) as site:
        connector = TLSConnector(
            ca=ca_pem, force_close=True, on_keylog=keylog.append, **identity(client_cert)
        )
        async with aiohttp.ClientSession(connector=connector) as session:
            views = []
            for _ in range(2):
                async with session.get(f"https://{HOST}:{site.port}/") as resp:
                    views.append((client_view(resp), await resp.json()))
    (first_client, first_server), (second_client, second_server) = views
    assert first_server["secure"] is True and first_server["scheme"] == "https"
    assert first_server["authorized"] is True
    subject = dict(rdn[0] for rdn in first_server["peercert"]["subject"])
    assert subject["commonName"] == "client"
    assert first_client == {
        "protocol": "TLSv1.3", "alpn": "http/1.1", "reused": False, "authorized": True,
    }  # fmt: skip
    assert first_server["alpn"] == "http/1.1" and first_server["reused"] is False
    assert second_client["reused"] is True and second_server["reused"] is True
    assert [tls.session_reused for tls in secured] == [False, True]
    assert new_sessions, "on_new_session never fired through TLSSite"
    assert any(line.startswith(b"CLIENT_HANDSHAKE_TRAFFIC_SECRET ") for line in keylog)


async def test_sni_callback_and_stdlib_shapes(server_key_pem, server_chain_pem, ca, ca_pem):
    """An async sni_callback picks the certificate for the name aiohttp sends as SNI
    (``server_hostname=``); the request's transport answers asyncio's keys."""
    api = ca.issue_cert("api.example.test")
    api_ctx = aiotls.create_secure_context(**identity(api))
    asked: list[str | None] = []

    async def choose(servername: str | None) -> aiotls.SecureContext | None:
        asked.append(servername)
        return api_ctx if servername == "api.example.test" else None

    async def handler(request: web.Request) -> web.Response:
        assert request.transport is not None
        cipher = request.transport.get_extra_info("cipher")
        ssl_object = request.transport.get_extra_info("ssl_object")
        return web.json_response(
            {
                "servername": request.transport.get_extra_info("tls").servername,
                "cipher": cipher[0],
                "version": ssl_object.version(),
                "sslcontext": request.transport.get_extra_info("sslcontext") is api_ctx,
                "padding": PADDING,
            }
        )

    app = web.Application()
    app.router.add_get("/", handler)
    async with (
        serving(app, key=server_key_pem, cert=server_chain_pem, sni_callback=choose) as site,
        aiohttp.ClientSession(connector=TLSConnector(ca=ca_pem)) as session,
    ):
        url = f"https://{HOST}:{site.port}/"
        async with session.get(url, server_hostname="api.example.test") as resp:
            assert resp.connection is not None and resp.connection.transport is not None
            peer = resp.connection.transport.get_extra_info("tls").get_peer_certificate()
            seen = await resp.json()
    assert asked == ["api.example.test"]
    assert peer["subjectaltname"] == "DNS:api.example.test"
    assert seen["servername"] == "api.example.test" and seen["version"] == "TLSv1.3"
    assert seen["cipher"].startswith("TLS_") and seen["sslcontext"] is True


async def test_ocsp_staple_through_site_and_connector():
    """on_ocsp_request on the TLSSite staples; request_ocsp/on_ocsp_response on the
    connector receive it before the request goes out."""
    ca = pki.make_ca("aiohttp OCSP test CA")
    key, chain = ca.issue(["localhost", HOST])
    leaf = x509.load_pem_x509_certificate(chain)
    staples: list[bytes | None] = []
    async with serving(
        info_app(), key=key, cert=chain, on_ocsp_request=lambda cert, issuer: ca.ocsp_response(cert)
    ) as site:
        connector = TLSConnector(ca=ca.cert_pem, request_ocsp=True, on_ocsp_response=staples.append)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"https://{HOST}:{site.port}/") as resp,
        ):
            assert resp.status == 200
    assert len(staples) == 1 and staples[0] is not None
    assert ocsp.verify(staples[0], leaf, ca.cert).status == "good"


async def test_external_session_store_through_site(server_key_pem, server_chain_pem, ca_pem):
    """TLS 1.2 session ids: the site's on_new_session/on_resume_session are the store,
    and the connector's second connection resumes from it."""
    store: dict[bytes, bytes] = {}
    lookups: list[bytes] = []

    async def resume(session_id: bytes) -> bytes | None:
        lookups.append(session_id)
        return store.get(session_id)

    async with serving(
        info_app(),
        key=server_key_pem,
        cert=server_chain_pem,
        secure_options=0x4000,  # SSL_OP_NO_TICKET: session ids, the kind a store shares
        on_new_session=store.__setitem__,
        on_resume_session=resume,
    ) as site:
        connector = TLSConnector(ca=ca_pem, max_version="TLSv1.2", force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            reused = []
            for _ in range(2):
                async with session.get(f"https://{HOST}:{site.port}/") as resp:
                    reused.append((await resp.json())["reused"])
    assert reused == [False, True]
    assert lookups and lookups[-1] in store


async def test_pooling_and_limits(server_key_pem, server_chain_pem, ca_pem):
    """Keep-alive reuses one TLS connection; ``limit=1`` funnels concurrent requests
    through it one at a time, as with TCPConnector."""
    secured: list[aiotls.TLSTransport] = []
    active = peak = 0

    async def work(request: web.Request) -> web.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0)  # let any other request in flight overlap with this one
        active -= 1
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/", work)
    async with serving(
        app, key=server_key_pem, cert=server_chain_pem, on_secure_connection=secured.append
    ) as site:
        url = f"https://{HOST}:{site.port}/"
        async with aiohttp.ClientSession(connector=TLSConnector(ca=ca_pem)) as session:
            for _ in range(3):
                async with session.get(url) as resp:
                    assert await resp.text() == "done"
        assert len(secured) == 1

        async def fetch(session: aiohttp.ClientSession) -> str:
            async with session.get(url) as resp:
                return await resp.text()

        async with aiohttp.ClientSession(connector=TLSConnector(ca=ca_pem, limit=1)) as session:
            assert await asyncio.gather(*(fetch(session) for _ in range(5))) == ["done"] * 5
    assert len(secured) == 2 and peak == 1


async def test_read_timeout(server_key_pem, server_chain_pem, ca_pem):
    """ClientTimeout(sock_read=...) ends a request whose answer does not come."""
    never = asyncio.Event()

    async def stall(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    app = web.Application()
    app.router.add_get("/", stall)
    async with serving(app, key=server_key_pem, cert=server_chain_pem) as site:
        timeout = aiohttp.ClientTimeout(sock_read=0.3)
        async with aiohttp.ClientSession(connector=TLSConnector(ca=ca_pem), timeout=timeout) as s:
            with pytest.raises(aiohttp.ServerTimeoutError):
                async with s.get(f"https://{HOST}:{site.port}/"):
                    pass
        never.set()


@pytest.mark.parametrize(
    ("timeout", "options"),
    [
        pytest.param(aiohttp.ClientTimeout(sock_connect=0.3), {}, id="aiohttp-sock_connect"),
        pytest.param(aiohttp.ClientTimeout(), {"handshake_timeout": 0.3}, id="aiotls-handshake"),
    ],
)
async def test_handshake_bounded_by_connect_timeouts(ca_pem, timeout, options):
    """A peer that accepts TCP but never answers the ClientHello: aiohttp's sock_connect
    covers the handshake as with stdlib ssl, and aiotls's handshake_timeout works too;
    either way aiohttp reports a connection timeout and the socket is closed."""
    hellos: list[bytes] = []
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hellos.append(await reader.read(5))
        await reader.read()  # until the client gives up
        closed.set()
        writer.close()

    server = await asyncio.start_server(silent, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        connector = TLSConnector(ca=ca_pem, **options)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            # Within 5 s, or the handshake was not bounded by 0.3 s (asyncio.timeout's
            # own TimeoutError is not a ConnectionTimeoutError).
            with pytest.raises(aiohttp.ConnectionTimeoutError):
                async with asyncio.timeout(5):
                    await session.get(f"https://{HOST}:{port}/")
        await asyncio.wait_for(closed.wait(), 5)
    finally:
        server.close()
        await server.wait_closed()
    assert len(hellos) == 1 and hellos[0][:1] == b"\x16"  # a TLS handshake record came


async def test_verification_rules(server_key_pem, server_chain_pem, ca_pem, server_cert):
    """Unknown issuer and wrong name fail as aiohttp certificate errors carrying aiotls's
    code; ssl=False skips verification and a Fingerprint pins, as in aiohttp."""
    leaf = x509.load_pem_x509_certificate(server_cert.cert_chain_pems[0].bytes())
    good_pin = aiohttp.Fingerprint(leaf.fingerprint(hashes.SHA256()))
    other = trustme.CA()
    async with serving(info_app(), key=server_key_pem, cert=server_chain_pem) as site:
        url = f"https://{HOST}:{site.port}/"
        async with aiohttp.ClientSession(
            connector=TLSConnector(ca=other.cert_pem.bytes())
        ) as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError) as untrusted:
                await session.get(url)
            async with session.get(url, ssl=False) as resp:
                assert resp.status == 200
            async with session.get(url, ssl=good_pin) as resp:
                assert resp.status == 200
            with pytest.raises(aiohttp.ServerFingerprintMismatch):
                await session.get(url, ssl=aiohttp.Fingerprint(b"\x00" * 32))
        async with aiohttp.ClientSession(connector=TLSConnector(ca=ca_pem)) as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError) as misnamed:
                await session.get(url, server_hostname="wrong.example.test")
            with pytest.raises(TypeError, match="ssl="):
                await session.get(url, ssl=ssl.create_default_context())
    error = untrusted.value.certificate_error
    assert isinstance(error, aiotls.TLSError)
    assert error.code == "UNABLE_TO_VERIFY_LEAF_SIGNATURE"
    assert misnamed.value.certificate_error.code == "ERR_TLS_CERT_ALTNAME_INVALID"  # type: ignore[attr-defined]


async def test_tls_failure_is_a_client_ssl_error(server_key_pem, server_chain_pem, ca_pem):
    """A handshake the server refuses (no common version) is a ClientConnectorSSLError
    whose cause is the aiotls error."""
    async with serving(
        info_app(), key=server_key_pem, cert=server_chain_pem, min_version="TLSv1.3"
    ) as site:
        connector = TLSConnector(ca=ca_pem, max_version="TLSv1.2")
        async with aiohttp.ClientSession(connector=connector) as session:
            with pytest.raises(aiohttp.ClientConnectorSSLError) as failed:
                await session.get(f"https://{HOST}:{site.port}/")
    assert isinstance(failed.value.__cause__, aiotls.TLSError)


async def _connect_proxy(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tunnels: list[str]
) -> None:
    """A minimal HTTP CONNECT proxy: one tunnel per connection, bytes piped both ways."""

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, aiotls.TLSError):
            pass
        finally:
            dst.close()

    head = await reader.readuntil(b"\r\n\r\n")
    method, target, _ = head.split(b"\r\n", 1)[0].split(b" ")
    assert method == b"CONNECT"
    tunnels.append(target.decode())
    host, port = target.decode().rsplit(":", 1)
    upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


@pytest.mark.parametrize("proxy_scheme", ["http", "https"])
async def test_https_through_a_proxy(
    server_key_pem, server_chain_pem, server_ctx, ca_pem, proxy_scheme
):
    """HTTPS through an HTTP proxy (aiotls over the CONNECT tunnel) and through an
    HTTPS proxy (aiotls to the proxy, then aiotls inside that: TLS in TLS)."""
    tunnels: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _connect_proxy(reader, writer, tunnels)

    if proxy_scheme == "https":
        proxy: Any = await aiotls.start_server(handle, HOST, 0, context=server_ctx)
    else:
        proxy = await asyncio.start_server(handle, HOST, 0)
    proxy_url = f"{proxy_scheme}://{HOST}:{proxy.sockets[0].getsockname()[1]}"
    try:
        async with (
            serving(info_app(), key=server_key_pem, cert=server_chain_pem) as site,
            aiohttp.ClientSession(connector=TLSConnector(ca=ca_pem)) as session,
            session.get(f"https://{HOST}:{site.port}/", proxy=proxy_url) as resp,
        ):
            view = client_view(resp)
            seen = await resp.json()
    finally:
        proxy.close()
        await proxy.wait_closed()
    assert tunnels == [f"{HOST}:{site.port}"]
    assert view["authorized"] is True and view["alpn"] == "http/1.1"
    assert seen["secure"] is True and seen["protocol"] == "TLSv1.3"


async def test_graceful_shutdown_with_a_request_in_flight(server_key_pem, server_chain_pem, ca_pem):
    """runner.cleanup() stops listening at once, lets the request in flight finish and
    delivers its whole response, then returns."""
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        started.set()
        await release.wait()
        return web.Response(text="finished " + "x" * 100_000)

    app = web.Application()
    app.router.add_get("/", slow)
    runner = web.AppRunner(app, shutdown_timeout=10)
    await runner.setup()
    site = TLSSite(runner, HOST, 0, key=server_key_pem, cert=server_chain_pem)
    await site.start()
    assert runner.addresses == [(HOST, site.port)]

    async def fetch(session: aiohttp.ClientSession) -> tuple[int, str]:
        async with session.get(f"https://{HOST}:{site.port}/") as resp:
            return resp.status, await resp.text()

    async with aiohttp.ClientSession(connector=TLSConnector(ca=ca_pem)) as session:
        request = asyncio.ensure_future(fetch(session))
        await asyncio.wait_for(started.wait(), 5)
        cleanup = asyncio.ensure_future(runner.cleanup())
        tls_server = site.tls_server
        assert tls_server is not None
        await eventually(lambda: not tls_server.is_serving())
        assert not tls_server.is_serving()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(HOST, site.port)
        assert not cleanup.done() and not request.done()
        release.set()
        status, body = await asyncio.wait_for(request, 5)
        await asyncio.wait_for(cleanup, 5)
    assert status == 200 and body == "finished " + "x" * 100_000


@pytest.mark.parametrize("where", ["path", "sock"])
async def test_site_on_a_unix_path_or_a_given_socket(
    tmp_path, server_key_pem, server_chain_pem, ca_pem, where
):
    """TLSSite listens on a unix socket or a socket it is handed, like UnixSite/SockSite."""
    runner = web.AppRunner(info_app())
    await runner.setup()
    listen: dict[str, Any]
    if where == "path":
        listen = {"path": str(tmp_path / "site.sock")}
        connect = {"path": listen["path"]}
    else:
        sock = socket.socket()
        sock.bind((HOST, 0))
        listen = {"sock": sock}
        connect = {"host": HOST, "port": sock.getsockname()[1]}
    site = TLSSite(runner, key=server_key_pem, cert=server_chain_pem, **listen)
    try:
        await site.start()
        assert site.name.startswith("https://")
        reader, writer = await aiotls.open_connection(ca=ca_pem, servername="localhost", **connect)
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        response = await reader.read()
        writer.close()
    finally:
        await runner.cleanup()
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'"secure": true' in response and b'"scheme": "https"' in response


async def test_options_are_checked_where_they_are_given(server_key_pem, server_chain_pem):
    """Bad TLS options raise when the site or connector is made (or run_app called),
    never later; stdlib SSLContexts are refused rather than silently used."""
    runner = web.AppRunner(info_app())
    await runner.setup()
    try:
        with pytest.raises(TypeError, match="bogus"):
            TLSSite(runner, HOST, 0, key=server_key_pem, cert=server_chain_pem, bogus=1)
        with pytest.raises(ValueError, match="handshake_timeout"):
            TLSSite(runner, HOST, 0, key=server_key_pem, cert=server_chain_pem,
                    handshake_timeout=-1)  # fmt: skip
        with pytest.raises(aiotls.TLSError):
            TLSSite(runner, HOST, 0, key=server_key_pem, cert="not a certificate")
        with pytest.raises(TypeError, match="host/port, path or sock"):
            TLSSite(runner, HOST, 0, path="/tmp/x", key=server_key_pem, cert=server_chain_pem)
        assert runner.sites == set()
    finally:
        await runner.cleanup()
    with pytest.raises(TypeError, match="bogus"):
        TLSConnector(bogus=1)
    with pytest.raises(TypeError, match="servername"):
        TLSConnector(servername="example.test")
    with pytest.raises(TypeError, match="SSLContext"):
        TLSConnector(ssl=ssl.create_default_context())
    with pytest.raises(ValueError, match="session_cache_size"):
        TLSConnector(session_cache_size=-1)
    with pytest.raises(TypeError, match="on_ocsp_response"):
        TLSConnector(on_ocsp_response="not callable")


def test_run_app_checks_options_before_starting(server_key_pem, server_chain_pem):
    started: list[web.Application] = []
    app = web.Application()
    app.on_startup.append(lambda app: started.append(app))  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="bogus"):
        run_app(app, key=server_key_pem, cert=server_chain_pem, bogus=1, print=None)
    assert started == []


async def test_session_cache_is_bounded(server_key_pem, server_chain_pem, ca_pem, server_cert):
    """With session_cache_size=1 only the latest destination keeps its session."""
    async with (
        serving(info_app(), key=server_key_pem, cert=server_chain_pem) as one,
        serving(info_app(), key=server_key_pem, cert=server_chain_pem) as two,
    ):
        connector = TLSConnector(ca=ca_pem, force_close=True, session_cache_size=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            reused = []
            for site in (one, two, one, two, two):
                async with session.get(f"https://{HOST}:{site.port}/") as resp:
                    reused.append(client_view(resp)["reused"])
    assert reused == [False, False, False, False, True]
