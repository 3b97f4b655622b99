"""``aiotls proxy`` with peers it did not write: curl, openssl s_client and node as
clients, an aiohttp application and nginx (reading PROXY v2) as backends; and the proxy
as a process: reloads under load (SIGHUP and file changes), the drain on SIGTERM, the
command line's flags and its errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from peers import HOST, PEER_TIMEOUT, require, run_nginx, run_peer
from proxy_util import (
    access_records,
    backend,
    close,
    connect,
    echo,
    proxy_port,
    proxy_process,
    read_all,
    running,
    scrape,
    write_config,
    write_identity,
)

import aiotls
from aiotls.cli import main

NODE = Path(__file__).resolve().parent / "node"
PROXY: dict[str, Any] = {"listen": f"{HOST}:0", "watch": "off", "drain_timeout": 5}


@contextlib.asynccontextmanager
async def aiohttp_backend(app: web.Application) -> AsyncIterator[str]:
    """A plain-HTTP aiohttp site on a free port; yields its address."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    try:
        assert site._server is not None
        yield f"{HOST}:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


def hello_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.path} over plain HTTP behind the proxy\n")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    return app


async def test_curl_through_the_proxy_to_aiohttp(tmp_path, ca):
    """curl (OpenSSL, ALPN h2 and http/1.1 offered) reaches an aiohttp app through the
    route of its SNI."""
    require("curl")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with aiohttp_backend(hello_app()) as app:
        route = {"sni": ["app.test"], **write_identity(tmp_path, ca, "app.test"), "backend": app}
        path = write_config(tmp_path / "proxy.toml", {**PROXY, "access_log": "off"}, [route])
        async with running(path) as proxy:
            port = proxy_port(proxy)
            argv = ["curl", "-sS", "--max-time", "20", "--cacert", str(ca_file), "--resolve",
                    f"app.test:{port}:{HOST}", f"https://app.test:{port}/x"]  # fmt: skip
            async with run_peer(*argv) as curl:
                assert await curl.wait() == 0, str(curl)
    assert curl.stdout == b"hello /x over plain HTTP behind the proxy\n"


async def test_openssl_s_client_through_the_proxy_to_an_echo(tmp_path, ca):
    """s_client verifies the proxy's certificate and talks to a TCP backend, which
    answers a line and closes: s_client gets close_notify and exits."""
    openssl = require("openssl")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    async def shout(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write((await reader.readline()).upper())
        await writer.drain()

    async with backend(shout) as up:
        route = {**write_identity(tmp_path, ca, "localhost"), "backend": up.address}
        path = write_config(tmp_path / "proxy.toml", {**PROXY, "access_log": "off"}, [route])
        async with running(path) as proxy:
            argv = [openssl, "s_client", "-connect", f"{HOST}:{proxy_port(proxy)}",
                    "-servername", "localhost", "-CAfile", str(ca_file),
                    "-verify_return_error", "-quiet"]  # fmt: skip
            async with run_peer(*argv) as peer:
                await peer.feed(b"hello from s_client\n", close=False)
                await peer.wait_for_output(r"^(HELLO FROM S_CLIENT)$")
                assert await peer.wait() == 0, str(peer)


async def test_node_half_closes_through_the_proxy(tmp_path, ca, server_files):
    """Node sends 1 MiB and ends its side; the echo backend sees EOF, sends the rest and
    closes; node gets every byte back, then the end."""
    node = require("node")
    async with backend(echo) as up:
        route = {"cert": server_files["cert"], "key": server_files["key"], "backend": up.address}
        path = write_config(tmp_path / "proxy.toml", {**PROXY, "access_log": "off"}, [route])
        async with running(path) as proxy:
            argv = [node, str(NODE / "half_close_client.js"), str(proxy_port(proxy)),
                    server_files["ca"], str(1 << 20)]  # fmt: skip
            async with run_peer(*argv) as peer:
                assert await peer.wait() == 0, str(peer)
    report = json.loads(peer.stdout)
    assert report["authorized"] is True and report["protocol"] == "TLSv1.3"
    assert report["received"] == report["sent"]


async def test_nginx_reads_the_proxy_protocol_header(tmp_path, ca):
    """nginx (listen ... proxy_protocol) takes the client's address from the header the
    proxy sends, TLVs and all."""
    location = 'location / { return 200 "$proxy_protocol_addr:$proxy_protocol_port\\n"; }'
    async with run_nginx(tmp_path, location, listen=" proxy_protocol") as (_, port):
        route = {**write_identity(tmp_path, ca, "localhost"), "backend": f"{HOST}:{port}",
                 "proxy_protocol": True}  # fmt: skip
        path = write_config(tmp_path / "proxy.toml", {**PROXY, "access_log": "off"}, [route])
        async with running(path) as proxy:
            reader, writer = await connect(proxy_port(proxy), ca)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = await read_all(reader)
            client = writer.get_extra_info("sockname")
            await close(writer)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response
    assert body == f"{client[0]}:{client[1]}\n".encode()


# -- the proxy as a process ----------------------------------------------------------


async def _get(port: int, ca: trustme.CA) -> bytes:
    """The body of one HTTP/1.1 request on a new TLS connection."""
    reader, writer = await connect(port, ca)
    try:
        writer.write(b"GET /load HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        response = await read_all(reader)
    finally:
        await close(writer)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response
    return body


async def test_reload_under_load_fails_no_request(tmp_path, ca):
    """300 requests, 10 at a time, while the proxy reloads: on SIGHUP, and when its
    certificate files are replaced (it watches them). Not one request fails, and the
    connections after the last replacement see the last certificate."""
    async with aiohttp_backend(hello_app()) as app:
        identity = write_identity(tmp_path, ca, "localhost")
        route = {**identity, "backend": app}
        proxy = {**PROXY, "watch": "0.1s", "metrics": f"{HOST}:0", "access_log": "off"}
        path = write_config(tmp_path / "proxy.toml", proxy, [route])
        async with proxy_process(path) as (proc, port):
            (metrics,) = await proc.wait_for_output(r"^metrics on (\S+)$")
            done, failures, hups = 0, [], 0

            async def client() -> None:
                nonlocal done
                while done + len(failures) < 300:
                    try:
                        assert (
                            await _get(port, ca)
                            == b"hello /load over plain HTTP behind the proxy\n"
                        )
                        done += 1
                    except Exception as exc:
                        failures.append(repr(exc))

            async def reloader() -> None:
                nonlocal hups
                for step in range(1, 10):
                    while done < step * 30:
                        await asyncio.sleep(0.01)
                    if step % 2:
                        proc.proc.send_signal(signal.SIGHUP)
                        hups += 1
                    else:  # a new certificate, swapped in atomically
                        fresh = write_identity(tmp_path, ca, "localhost", stem=f"new{step}")
                        for kind in ("key", "cert"):
                            os.replace(fresh[kind], identity[kind])

            async with asyncio.timeout(60):
                await asyncio.gather(*(client() for _ in range(10)), reloader())
            served = await _served_fingerprint(port, ca, identity["cert"])
            counts = await scrape(metrics)
            await proc.terminate()
    assert failures == [] and done >= 300
    assert counts['aiotls_proxy_reloads_total{result="ok"}'] >= hups + 1
    assert served == _fingerprint(identity["cert"])  # the last certificate written


def _fingerprint(cert_file: str) -> str:
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


async def _served_fingerprint(port: int, ca: trustme.CA, cert_file: str) -> str:
    """The proxy's certificate fingerprint, once it serves the one in ``cert_file`` (it
    polls its files), or the one it serves after a few seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while True:
        reader, writer = await connect(port, ca)
        served = writer.get_extra_info("tls").get_peer_certificate()["fingerprint256"]
        await close(writer)
        if served == _fingerprint(cert_file) or loop.time() > deadline:
            return str(served)
        await asyncio.sleep(0.05)


async def test_sigterm_drains_then_exits(tmp_path, ca):
    """SIGTERM: the proxy stops accepting at once, lets an in-flight request finish,
    cuts an idle connection at drain_timeout, logs both, and exits 0."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        arrived.set()
        await release.wait()
        writer.write(b"done\n")
        await writer.drain()

    log = tmp_path / "access.log"
    async with backend(slow) as up:
        route = {**write_identity(tmp_path, ca, "localhost"), "backend": up.address}
        proxy = {**PROXY, "drain_timeout": 2, "access_log": str(log)}
        path = write_config(tmp_path / "proxy.toml", proxy, [route])
        async with proxy_process(path) as (proc, port):
            busy_reader, busy = await connect(port, ca)
            busy.write(b"work\n")
            await asyncio.wait_for(arrived.wait(), PEER_TIMEOUT)
            idle_reader, idle = await connect(port, ca)
            proc.proc.send_signal(signal.SIGTERM)
            await proc.wait_for_output(r"(draining: 2 connections open)", stream="stderr")
            with pytest.raises(OSError):
                await asyncio.open_connection(HOST, port)
            release.set()
            assert await read_all(busy_reader) == b"done\n"
            await close(busy)  # done before the deadline
            with contextlib.suppress(aiotls.TLSError, ConnectionError):
                assert await read_all(idle_reader) == b""  # cut at the deadline
            assert await proc.wait() == 0, str(proc)
            for writer in (busy, idle):
                await close(writer)
    outcomes = sorted(r["outcome"] for r in access_records(log))
    assert outcomes == ["drained", "ok"], outcomes


async def test_workers_share_tickets_reload_on_sighup_and_drain_on_sigterm(tmp_path, ca):
    """--workers 2: both serve, a TLS 1.3 ticket resumes on whichever worker the kernel
    picks (the supervisor shares the keys), SIGHUP starts a new generation with the
    certificate read again, SIGTERM drains them and exits 0."""
    serving = r"(generation {} serving with 2 workers)"  # the old one stopped listening
    async with backend(echo) as up:
        identity = write_identity(tmp_path, ca, "localhost")
        route = {**identity, "backend": up.address}
        path = write_config(tmp_path / "proxy.toml", {**PROXY, "access_log": "off"}, [route])
        async with proxy_process(path, "--workers", "2") as (proc, port):
            await proc.wait_for_output(serving.format(1), stream="stderr")
            await proc.wait_for_output(r"(worker 1 \(pid \d+, generation 1\) serving)",
                                       stream="stderr")  # fmt: skip
            sessions: list[bytes] = []
            reader, writer = await connect(port, ca, on_session=sessions.append)
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
            await close(writer)
            resumed = []
            for _ in range(12):  # source ports differ: both workers take some of these
                reader, writer = await connect(port, ca, session=sessions[-1])
                resumed.append(writer.get_extra_info("tls").session_reused)
                await close(writer)
            assert all(resumed), resumed

            fresh = write_identity(tmp_path, ca, "localhost", stem="renewed")
            for kind in ("key", "cert"):
                os.replace(fresh[kind], identity[kind])
            proc.proc.send_signal(signal.SIGHUP)
            await proc.wait_for_output(serving.format(2), stream="stderr")
            reader, writer = await connect(port, ca)
            served = writer.get_extra_info("tls").get_peer_certificate()["fingerprint256"]
            await close(writer)
            assert served == _fingerprint(identity["cert"])
            proc.proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0, str(proc)


async def test_cli_flags_for_one_route(tmp_path, ca):
    """The simple case without a file: flags for one route, client certificate required."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    identity = write_identity(tmp_path, ca, "localhost")
    client = ca.issue_cert("alice@example.test", common_name="alice")
    async with backend(echo) as up:
        argv = [sys.executable, "-m", "aiotls", "proxy", "--listen", f"{HOST}:0",
                "--cert", identity["cert"], "--key", identity["key"], "--backend", up.address,
                "--ca", str(ca_file), "--require-cert", "--allow-cn", "alice"]  # fmt: skip
        async with run_peer(*argv) as proc:
            (port,) = await proc.wait_for_output(r"^listening on \S+:(\d+)$")
            reader, writer = await connect(
                int(port), ca, cert=client.cert_chain_pems[0].bytes(),
                key=client.private_key_pem.bytes(),
            )  # fmt: skip
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            await close(writer)
            (line,) = await proc.wait_for_output(r'^(\{.*"outcome": "ok".*\})$')
            await proc.terminate()
    assert json.loads(line)["client_cn"] == "alice"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cert", "x.pem"], "give --config FILE, or --cert, --key and --backend"),
        (["--config", "{dir}/missing.toml"], "cannot read"),
        (["--config", "{dir}/bad.toml"], "backend: expected host:port"),
        (["--config", "{dir}/bad.toml", "--backend", "x:1"], "with --config, put it in"),
        (["--config", "{dir}/nocert.toml", "--check"], "cert: cannot read"),
    ],
)
def test_cli_usage_errors_exit_2(tmp_path, capsys, argv, message):
    (tmp_path / "bad.toml").write_text('[[route]]\ncert = "c"\nkey = "k"\nbackend = "nowhere"\n')
    (tmp_path / "nocert.toml").write_text(
        '[[route]]\ncert = "c"\nkey = "k"\nbackend = "127.0.0.1:1"\n'
    )
    assert main(["proxy", *(a.format(dir=tmp_path) for a in argv)]) == 2
    assert message in capsys.readouterr().err


def _rss(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_stalled_backend_does_not_grow_the_proxy_process(tmp_path, ca):
    """As a process: a client pushing 64 MiB at a backend that reads nothing raises the
    proxy's resident memory by far less than that, because it stops reading the client."""
    gate = asyncio.Event()

    async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.pause_reading()
        await gate.wait()

    chunk = os.urandom(1 << 20)
    async with backend(stalled) as up:
        route = {**write_identity(tmp_path, ca, "localhost"), "backend": up.address}
        proxy = {**PROXY, "metrics": f"{HOST}:0", "access_log": "off"}
        path = write_config(tmp_path / "proxy.toml", proxy, [route])
        async with proxy_process(path) as (proc, port):
            (metrics,) = await proc.wait_for_output(r"^metrics on (\S+)$")
            reader, writer = await connect(port, ca)
            before = _rss(proc.proc.pid)

            async def push() -> None:
                for _ in range(64):
                    writer.write(chunk)
                    await writer.drain()

            sending = asyncio.ensure_future(push())
            seen, still = -1.0, 0
            async with asyncio.timeout(20):
                while still < 20:  # bytes_in stopped moving: everything is full
                    now = (await scrape(metrics)).get(
                        'aiotls_proxy_bytes_total{direction="in",route="default"}', 0.0
                    )
                    still = still + 1 if now == seen and now > 0 else 0
                    seen = now
                    await asyncio.sleep(0.01)
            grown = _rss(proc.proc.pid) - before
            assert not sending.done() and seen < 24 << 20, seen
            assert grown < 24 << 20, grown
            gate.set()
            sending.cancel()
            writer.transport.abort()
            await proc.terminate()
