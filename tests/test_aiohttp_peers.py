"""aiotls.aiohttp against peers it did not write: curl, aiohttp on stdlib ssl, headless
Chromium, and the examples run as programs (run_app and TLSConnector end to end)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import ssl
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from peers import HOST, require, run_peer
from test_aiohttp import client_view, info_app, serving
from util import pattern

from aiotls.aiohttp import TLSConnector

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: Bound on a browser run (start-up, two page loads, exit) on a slow shared machine.
BROWSER_TIMEOUT = 45.0
BIG = 20 << 20


async def test_curl_keep_alive_and_20_mib_streamed_each_way(
    tmp_path, server_key_pem, server_chain_pem, server_files
):
    """curl over HTTP/1.1 on one kept-alive connection: a 20 MiB chunked download the
    handler streams, then a 20 MiB upload the handler reads as a stream."""
    require("curl")
    body = pattern(BIG, b"aiohttp-curl")
    upload = tmp_path / "upload.bin"
    upload.write_bytes(body)
    secured: list[Any] = []

    async def download(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(0, BIG, 1 << 20):
            await response.write(body[i : i + (1 << 20)])
        await response.write_eof()
        return response

    async def receive(request: web.Request) -> web.Response:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_chunked(1 << 16):
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"size": size, "sha256": digest.hexdigest()})

    app = web.Application(client_max_size=BIG + 1)
    app.router.add_get("/download", download)
    app.router.add_post("/upload", receive)
    async with serving(
        app, key=server_key_pem, cert=server_chain_pem, on_secure_connection=secured.append
    ) as site:
        base = f"https://localhost:{site.port}"
        common = ["--http1.1", "--cacert", server_files["ca"],
                  "--resolve", f"localhost:{site.port}:{HOST}",
                  "-w", "%{num_connects} %{http_version}\\n"]  # fmt: skip
        argv = ["curl", "-sS", "--max-time", "30",
                *common, "-o", str(tmp_path / "download.bin"), f"{base}/download", "--next",
                *common, "-o", str(tmp_path / "answer.json"), "--data-binary", f"@{upload}",
                "-H", "Content-Type: application/octet-stream", f"{base}/upload"]  # fmt: skip
        async with run_peer(*argv) as curl:
            assert await curl.wait(timeout=40) == 0, str(curl)
    assert curl.stdout.decode().split("\n")[:2] == ["1 1.1", "0 1.1"]  # one connection, reused
    assert len(secured) == 1
    assert (tmp_path / "download.bin").read_bytes() == body
    answer = json.loads((tmp_path / "answer.json").read_text())
    assert answer == {"size": BIG, "sha256": hashlib.sha256(body).hexdigest()}


async def test_stdlib_ssl_aiohttp_client_against_tlssite(server_key_pem, server_chain_pem, ca_pem):
    """aiohttp's own client (stdlib ssl) talks to a TLSSite."""
    context = ssl.create_default_context(cadata=ca_pem)
    context.set_alpn_protocols(["http/1.1"])  # as aiohttp's default contexts do
    async with (
        serving(info_app(), key=server_key_pem, cert=server_chain_pem) as site,
        aiohttp.ClientSession() as session,
        session.get(f"https://{HOST}:{site.port}/", ssl=context) as resp,
    ):
        assert resp.connection is not None and resp.connection.transport is not None
        ssl_object = resp.connection.transport.get_extra_info("ssl_object")
        negotiated = (ssl_object.version(), ssl_object.selected_alpn_protocol())
        seen = await resp.json()
    assert negotiated == ("TLSv1.3", "http/1.1")
    assert seen["secure"] is True and seen["scheme"] == "https" and seen["alpn"] == "http/1.1"


async def test_tlsconnector_against_stdlib_ssl_server(server_files, ca_pem):
    """TLSConnector against aiohttp's TCPSite on stdlib ssl: verified, ALPN, and the
    second connection resumes the stdlib server's TLS 1.3 ticket."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server_files["cert"], server_files["key"])
    context.set_alpn_protocols(["http/1.1"])
    runner = web.AppRunner(info_app())
    await runner.setup()
    try:
        site = web.TCPSite(runner, HOST, 0, ssl_context=context)
        await site.start()
        connector = TLSConnector(ca=ca_pem, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            views = []
            for _ in range(2):
                async with session.get(f"https://{HOST}:{site.port}/") as resp:
                    views.append(client_view(resp))
                    assert (await resp.json())["secure"] is True
    finally:
        await runner.cleanup()
    assert views[0] == {
        "protocol": "TLSv1.3", "alpn": "http/1.1", "reused": False, "authorized": True,
    }  # fmt: skip
    assert views[1]["reused"] is True


# The first page closes its connection and shows the second page in an iframe, so
# the second navigation needs a new connection, which can resume the first one's session.
FIRST_PAGE = """<!doctype html>
<html><head><title>aiotls</title><link rel="icon" href="data:,"></head>
<body><p id="first">served by aiotls</p>
<iframe src="/second" onload="document.getElementById('second').textContent =
  this.contentDocument.body.textContent"></iframe>
<p id="second">not loaded</p></body></html>
"""


async def test_chromium_loads_a_page_over_tls13_mlkem_and_resumes(
    tmp_path, server_key_pem, server_chain_pem, server_cert
):
    """Headless Chromium trusts the test certificate by its SPKI hash (no checks turned
    off) and loads a page from a TLSSite, then navigates to a second page on a new
    connection. The DOM shows both rendered; the server saw TLS 1.3 with X25519MLKEM768
    and ALPN http/1.1 on both connections, and the second one resumed the session."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (bash .ci/install-peers.sh installs it)")
    leaf = x509.load_pem_x509_certificate(server_cert.cert_chain_pems[0].bytes())
    spki = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    spki_hash = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    connections: list[dict[str, Any]] = []
    requests: list[tuple[str, int]] = []

    def record(transport: Any) -> None:
        tls = transport.get_extra_info("tls")
        connections.append(
            {
                "port": transport.get_extra_info("peername")[1],
                "protocol": tls.get_protocol(),
                "group": tls.engine.get_group_name(),
                "alpn": tls.alpn_protocol,
                "servername": tls.servername,
                "reused": tls.session_reused,
            }
        )

    async def first(request: web.Request) -> web.Response:
        assert request.transport is not None
        requests.append((request.path, request.transport.get_extra_info("peername")[1]))
        return web.Response(text=FIRST_PAGE, content_type="text/html",
                            headers={"Connection": "close"})  # fmt: skip

    async def second(request: web.Request) -> web.Response:
        assert request.transport is not None
        requests.append((request.path, request.transport.get_extra_info("peername")[1]))
        return web.Response(text="second page over aiotls", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/", first)
    app.router.add_get("/second", second)
    profile = tmp_path / "profile"
    (profile / "Default").mkdir(parents=True)
    # "Preload pages" off: no speculative connection that could race the first
    # connection's session ticket (and so start without a session to resume).
    (profile / "Default" / "Preferences").write_text(
        json.dumps({"net": {"network_prediction_options": 2}})
    )
    async with serving(
        app, key=server_key_pem, cert=server_chain_pem, on_secure_connection=record
    ) as site:
        argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                "--host-resolver-rules=MAP localhost 127.0.0.1",
                f"--ignore-certificate-errors-spki-list={spki_hash}",
                "--dump-dom", f"https://localhost:{site.port}/"]  # fmt: skip
        async with run_peer(*argv) as browser:
            code = await browser.wait(timeout=BROWSER_TIMEOUT)
    dom = browser.stdout.decode()
    assert code == 0, str(browser)
    assert '<p id="first">served by aiotls</p>' in dom, str(browser)
    assert '<p id="second">second page over aiotls</p>' in dom, str(browser)
    assert [path for path, _ in requests] == ["/", "/second"]
    by_port = {c["port"]: c for c in connections}
    first_conn, second_conn = (by_port[port] for _, port in requests)
    assert first_conn is not second_conn
    for conn in (first_conn, second_conn):
        assert conn["protocol"] == "TLSv1.3"
        assert conn["group"] == "X25519MLKEM768"
        assert conn["alpn"] == "http/1.1"
        assert conn["servername"] == "localhost"
    assert first_conn["reused"] is False and second_conn["reused"] is True


async def test_examples_run_app_and_tlsconnector(tmp_path):
    """examples/aiohttp_server.py (run_app) and examples/aiohttp_client.py against each
    other; SIGTERM then stops the server gracefully (exit status 0)."""
    ca_path = tmp_path / "ca.pem"
    server_argv = [sys.executable, "-u", str(EXAMPLES / "aiohttp_server.py"),
                   "--port", "0", "--ca-out", str(ca_path)]  # fmt: skip
    async with run_peer(*server_argv) as server:
        (port,) = await server.wait_for_output(r"Running on https://127\.0\.0\.1:(\d+) ")
        client_argv = [sys.executable, str(EXAMPLES / "aiohttp_client.py"),
                       "--url", f"https://127.0.0.1:{port}/", "--ca", str(ca_path)]  # fmt: skip
        async with run_peer(*client_argv) as client:
            assert await client.wait(timeout=30) == 0, str(client)
        assert await server.terminate(timeout=30) == 0, str(server)
    lines = client.stdout.decode().splitlines()
    assert len(lines) == 2, str(client)
    assert all(line.startswith("200 TLSv1.3 ") and "alpn=http/1.1" in line for line in lines)
    assert lines[0].endswith("session_reused=False") and lines[1].endswith("session_reused=True")
