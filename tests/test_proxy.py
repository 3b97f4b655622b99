"""``aiotls proxy`` in-process: forwarding, SNI and ALPN routes, client certificate
policies, PROXY v2, half-close, limits, timeouts, backpressure, reloads, ticket keys,
the access log and the metrics. Clients are aiotls clients; backends plain TCP servers."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from peers import HOST
from proxy_util import (
    access_records,
    backend,
    client_identity,
    close,
    connect,
    echo,
    greeter,
    proxy_port,
    read_all,
    running,
    samples,
    scrape,
    write_config,
    write_identity,
)
from proxyprotocol.v2 import ProxyProtocolV2
from test_client_hello_hook import relay
from test_clienthello import ja4plus_forms
from util import eventually

import aiotls
from aiotls import ClientHello
from aiotls.proxy import Proxy, ProxyConfigError, load_config

PROXY: dict[str, Any] = {
    "listen": f"{HOST}:0",
    "watch": "off",
    "shutdown_timeout": 2,
    "drain_timeout": 5,
}


@pytest.fixture
def certs(tmp_path: Path, ca: trustme.CA) -> dict[str, dict[str, str]]:
    return {
        "localhost": write_identity(tmp_path, ca, "localhost", "127.0.0.1"),
        "a": write_identity(tmp_path, ca, "a.test"),
        "b": write_identity(tmp_path, ca, "b.test", "*.b.test"),
    }


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "access.log"


def config(tmp_path: Path, log_path: Path, routes: list[dict[str, Any]], **proxy: Any) -> Path:
    return write_config(
        tmp_path / "proxy.toml", {**PROXY, "access_log": str(log_path), **proxy}, routes
    )


async def record_of(log_path: Path, n: int = 1) -> list[dict[str, Any]]:
    """The first ``n`` access-log records, once written."""
    await eventually(lambda: len(access_records(log_path)) >= n, timeout=10)
    records = access_records(log_path)
    assert len(records) >= n, records
    return records


async def test_echo_through_the_proxy_and_its_access_log(tmp_path, ca, certs, log_path):
    """1 MiB each way through the proxy; one access-log line with the connection's facts."""
    payload = os.urandom(1 << 20)
    async with backend(echo) as up:
        path = config(tmp_path, log_path, [{**certs["localhost"], "backend": up.address}])
        async with running(path) as proxy:
            reader, writer = await connect(proxy_port(proxy), ca)
            client_port = writer.get_extra_info("sockname")[1]
            writer.write(payload)
            writer.write_eof()
            assert await read_all(reader) == payload
            await close(writer)
            (record,) = await record_of(log_path)
    assert record["peer"] == f"{HOST}:{client_port}"
    assert record["outcome"] == "ok" and record["error"] is None
    assert record["bytes_in"] == record["bytes_out"] == len(payload)
    assert record["version"] == "TLSv1.3" and record["sni"] == "localhost"
    assert record["route"] == "default" and record["backend"] == up.address
    assert record["cipher"].startswith("TLS_") and record["group"]
    assert record["ja4"].startswith("t13d") and record["resumed"] is False
    assert record["handshake_ms"] > 0 and record["duration"] > 0


async def test_access_log_carries_the_ja4_of_the_client(tmp_path, ca, certs, log_path):
    """The JA4 of the bytes a relay saw (by ja4plus), for a connection and a refused one."""
    async with backend(echo) as up:
        path = config(tmp_path, log_path, [{**certs["localhost"], "backend": up.address}])
        async with running(path) as proxy, relay(proxy_port(proxy)) as (port, seen):
            reader, writer = await connect(port, ca, alpn_protocols=["h2", "http/1.1"])
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
            await close(writer)
            (record,) = await record_of(log_path)
            hello = ClientHello.from_records(bytes(seen))
            assert hello is not None
            assert record["ja4"] == hello.ja4 == ja4plus_forms(bytes(seen))[0]
            del seen[:]
            with pytest.raises(aiotls.TLSError):
                await connect(port, ca, servername="unknown.test")
            _, failed = await record_of(log_path, 2)
    refused = ClientHello.from_records(bytes(seen))
    assert refused is not None and refused.server_name == "unknown.test"
    assert failed["outcome"] != "ok" and failed["ja4"] == refused.ja4


async def test_sni_routes_choose_certificate_and_backend(tmp_path, ca, certs, log_path):
    """Exact names, a wildcard and the default route each get their own certificate and
    backend; an unknown name goes to the default."""
    async with backend(greeter("A")) as a, backend(greeter("B")) as b, backend(greeter("D")) as d:
        routes = [
            {"name": "a", "sni": ["a.test"], **certs["a"], "backend": a.address},
            {"name": "b", "sni": ["b.test", "*.b.test"], **certs["b"], "backend": b.address},
            {"name": "d", **certs["localhost"], "backend": d.address},
        ]
        async with running(config(tmp_path, log_path, routes)) as proxy:
            seen = {}
            for name in ("a.test", "b.test", "x.b.test", "localhost"):
                reader, writer = await connect(proxy_port(proxy), ca, servername=name)
                cert = writer.get_extra_info("tls").get_peer_certificate()
                seen[name] = (await reader.readline(), cert["subjectaltname"].split(",")[0])
                await close(writer)
    assert seen == {
        "a.test": (b"A\n", "DNS:a.test"),
        "b.test": (b"B\n", "DNS:b.test"),
        "x.b.test": (b"B\n", "DNS:b.test"),
        "localhost": (b"D\n", "DNS:localhost"),
    }


async def test_no_default_route_refuses_unknown_names(tmp_path, ca, certs, log_path):
    async with backend(greeter("A")) as a:
        routes = [{"name": "a", "sni": ["a.test"], **certs["a"], "backend": a.address}]
        async with running(config(tmp_path, log_path, routes)) as proxy:
            with pytest.raises((aiotls.TLSError, ConnectionError)):
                await connect(proxy_port(proxy), ca, servername="localhost")
            (record,) = await record_of(log_path)
    assert record["outcome"] == "no_route" and record["sni"] == "localhost"
    assert record["route"] is None and "ERR_TLS_SNI_FROM_SERVER" in record["error"]


async def test_alpn_picks_among_routes_of_one_name(tmp_path, ca, certs, log_path):
    """Two routes for one name: h2 goes to one backend, http/1.1 to the other; a client
    offering no ALPN gets the first."""
    async with backend(greeter("H2")) as h2, backend(greeter("H1")) as h1:
        routes = [
            {"name": "h2", "sni": ["a.test"], "alpn": ["h2"], **certs["a"], "backend": h2.address},
            {"name": "h1", "sni": ["a.test"], "alpn": ["http/1.1"], **certs["a"],
             "backend": h1.address},
        ]  # fmt: skip
        async with running(config(tmp_path, log_path, routes)) as proxy:
            seen = []
            for offer in (["h2", "http/1.1"], ["http/1.1"], None):
                options = {"alpn_protocols": offer} if offer else {}
                reader, writer = await connect(proxy_port(proxy), ca, "a.test", **options)
                seen.append((await reader.readline(), writer.get_extra_info("tls").alpn_protocol))
                await close(writer)
    assert seen == [(b"H2\n", "h2"), (b"H1\n", "http/1.1"), (b"H2\n", False)]


@pytest.mark.parametrize("who", ["alice", "bob", "dns", "uri", "nobody"])
async def test_client_certificate_allow_lists(tmp_path, ca, certs, log_path, who):
    """A route requiring a client certificate admits alice (CN), a DNS SAN and a URI SAN
    on its allow-lists; bob's certificate verifies but is on none of them: the handshake
    completes and the proxy closes at once, without touching the backend; a client
    without a certificate fails the handshake."""
    identities = {
        "alice": client_identity(ca, "alice"),
        "bob": client_identity(ca, "bob"),
        "dns": client_identity(ca, "svc", dns=("svc.example.test",)),
        "uri": client_identity(ca, "spiffe", uris=("spiffe://example.test/web",)),
        "nobody": {},
    }
    ca_file = tmp_path / "clients-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    policy = {
        "mode": "require",
        "ca": str(ca_file),
        "allow_cn": ["alice"],
        "allow_dns": ["svc.example.test"],
        "allow_uri": ["spiffe://example.test/web"],
    }
    async with backend(greeter("secret")) as up:
        route = {**certs["localhost"], "backend": up.address, "client_auth": policy}
        async with running(config(tmp_path, log_path, [route])) as proxy:
            if who == "nobody":
                with pytest.raises((aiotls.TLSError, ConnectionError)):
                    reader, writer = await connect(proxy_port(proxy), ca)
                    await reader.read()  # TLS 1.3: the refusal comes after the client's Finished
            else:
                reader, writer = await connect(proxy_port(proxy), ca, **identities[who])
                answer = await (reader.readline() if who != "bob" else read_all(reader))
                await close(writer)
            (record,) = await record_of(log_path)
        connections = len(up.connections)
    if who in ("alice", "dns", "uri"):
        assert answer == b"secret\n"
        assert record["outcome"] == "ok" and connections == 1
    elif who == "bob":
        assert answer == b"" and connections == 0
        assert record["outcome"] == "forbidden" and record["client_cn"] == "bob"
        assert "allow-lists" in record["error"]
    else:
        assert record["outcome"] == "handshake_failed" and connections == 0


async def test_optional_client_certificate(tmp_path, ca, certs, log_path):
    """Optional: clients without a certificate come in; one whose certificate does not
    verify (another CA) is refused."""
    ca_file = tmp_path / "clients-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    stranger = client_identity(trustme.CA(), "mallory")
    async with backend(greeter("hi")) as up:
        route = {**certs["localhost"], "backend": up.address,
                 "client_auth": {"mode": "optional", "ca": str(ca_file)}}  # fmt: skip
        async with running(config(tmp_path, log_path, [route])) as proxy:
            reader, writer = await connect(proxy_port(proxy), ca)
            assert await reader.readline() == b"hi\n"
            await close(writer)
            reader, writer = await connect(proxy_port(proxy), ca, **stranger)
            assert await read_all(reader) == b""
            await close(writer)
            records = await record_of(log_path, 2)
    outcomes = sorted((r["outcome"], r["client_cn"]) for r in records)
    assert outcomes == [("forbidden", "mallory"), ("ok", None)]


async def test_proxy_protocol_v2_read_by_an_independent_parser(tmp_path, ca, certs, log_path):
    """The backend reads the header with the proxy-protocol package: the client's address
    and port, the proxy's, SNI, ALPN, TLS version, cipher and the client's CN (verified);
    then the client's bytes, unchanged."""
    ca_file = tmp_path / "clients-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    headers: asyncio.Queue[Any] = asyncio.Queue()

    async def check(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        start = await reader.readexactly(16)
        rest = await reader.readexactly(int.from_bytes(start[14:16], "big"))
        await headers.put(ProxyProtocolV2().unpack(start + rest))
        await echo(reader, writer)

    async with backend(check) as up:
        route = {
            "sni": ["a.test"],
            **certs["a"],
            "backend": up.address,
            "proxy_protocol": True,
            "alpn": ["h2"],
            "client_auth": {"mode": "optional", "ca": str(ca_file)},
        }
        async with running(config(tmp_path, log_path, [route])) as proxy:
            reader, writer = await connect(
                proxy_port(proxy),
                ca,
                "a.test",
                alpn_protocols=["h2"],
                **client_identity(ca, "alice"),
            )
            writer.write(b"after the header")
            assert await reader.readexactly(16) == b"after the header"
            cipher = writer.get_extra_info("tls").get_cipher()["name"]
            client, server = writer.get_extra_info("sockname"), writer.get_extra_info("peername")
            await close(writer)
            result = await asyncio.wait_for(headers.get(), 5)
    assert (str(result.source[0]), result.source[1]) == client
    assert (str(result.dest[0]), result.dest[1]) == server
    tlv = result.tlv
    assert tlv.authority == "a.test" and tlv.alpn == b"h2"
    assert tlv.ssl.version == "TLSv1.3" and tlv.ssl.cipher == cipher and tlv.ssl.cn == "alice"
    assert tlv.ssl.has_ssl and tlv.ssl.has_cert_conn and tlv.ssl.verified


async def test_half_close_both_ways(tmp_path, ca, certs, log_path):
    """The client's close_notify reaches the backend as EOF while the backend can still
    answer; the backend's FIN reaches the client as close_notify."""

    async def reverse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's EOF
        writer.write(data[::-1])
        await writer.drain()

    async with backend(reverse) as up:
        path = config(tmp_path, log_path, [{**certs["localhost"], "backend": up.address}])
        async with running(path) as proxy:
            reader, writer = await connect(proxy_port(proxy), ca)
            writer.write(b"stressed")
            writer.write_eof()
            assert await read_all(reader) == b"desserts"
            await close(writer)
            (record,) = await record_of(log_path)
    assert record["outcome"] == "ok" and (record["bytes_in"], record["bytes_out"]) == (8, 8)


async def test_route_connection_limit(tmp_path, ca, certs, log_path):
    async with backend(greeter("hi")) as up:
        route = {**certs["localhost"], "backend": up.address, "max_connections": 2}
        async with running(config(tmp_path, log_path, [route])) as proxy:
            port = proxy_port(proxy)
            first = [await connect(port, ca) for _ in range(2)]
            for reader, _ in first:
                assert await reader.readline() == b"hi\n"
            reader, writer = await connect(port, ca)
            assert await read_all(reader) == b""  # the third is closed at once
            await close(writer)
            (refused,) = await record_of(log_path)
            await close(first[0][1])
            reader, writer = await connect(port, ca)  # a place is free again
            assert await reader.readline() == b"hi\n"
            for w in (writer, first[1][1]):
                await close(w)
    assert refused["outcome"] == "limit"


async def test_backend_unavailable(tmp_path, ca, certs, log_path):
    async with backend(echo) as up:
        gone = up.address
    path = config(tmp_path, log_path, [{**certs["localhost"], "backend": gone}])
    async with running(path) as proxy:
        reader, writer = await connect(proxy_port(proxy), ca)
        assert await read_all(reader) == b""
        await close(writer)
        (record,) = await record_of(log_path)
    assert record["outcome"] == "backend_unavailable" and gone in record["error"]


async def test_handshake_and_idle_timeouts_reap_slow_clients(tmp_path, ca, certs, log_path):
    """Slowloris: connections that never finish a handshake are closed after
    handshake_timeout, one that handshakes and then sends nothing after idle_timeout;
    a well-behaved client is served meanwhile."""
    async with backend(greeter("hi")) as up:
        path = config(tmp_path, log_path, [{**certs["localhost"], "backend": up.address}],
                      handshake_timeout=0.5, idle_timeout=0.5)  # fmt: skip
        async with running(path) as proxy:
            port = proxy_port(proxy)
            silent = [await asyncio.open_connection(HOST, port) for _ in range(20)]
            for _, w in silent[:10]:
                w.write(b"\x16\x03\x01")  # the start of a record, and no more
            reader, writer = await connect(port, ca)
            assert await reader.readline() == b"hi\n"
            for r, _ in silent:
                assert await read_all(r) == b""  # closed by the proxy
            assert await read_all(reader) == b""  # idle: closed too
            await close(writer)
            records = await record_of(log_path, 21)
            for _, w in silent:
                w.close()
            metrics = proxy.render_metrics()
    outcomes = sorted(r["outcome"] for r in records)
    assert outcomes == ["handshake_timeout"] * 20 + ["idle_timeout"]
    assert 'aiotls_proxy_handshakes_total{result="timeout"} 20' in metrics


async def test_slow_backend_and_slow_client_hold_bounded_buffers(tmp_path, ca, certs, log_path):
    """A backend that stops reading makes the proxy stop reading the client (the client's
    writes block) and a client that stops reading makes it stop reading the backend:
    either way the proxy buffers at most about buffer_size per direction. Then both
    resume and every byte arrives."""
    total, buffer_size = 48 << 20, 256 << 10
    payload = os.urandom(1 << 20) * (total >> 20)
    gate = asyncio.Event()
    received: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.pause_reading()
        writer.write(payload)  # the client does not read either, for now
        await gate.wait()
        writer.transport.resume_reading()
        digest, n = hashlib.sha256(), 0
        while n < total and (chunk := await reader.read(1 << 20)):
            digest.update(chunk)
            n += len(chunk)
        received.set_result(digest.hexdigest())
        await writer.drain()

    async with backend(stalled) as up:
        path = config(tmp_path, log_path, [{**certs["localhost"], "backend": up.address}],
                      buffer_size=buffer_size)  # fmt: skip
        async with running(path) as proxy:
            reader, writer = await connect(proxy_port(proxy), ca)
            writer.transport.pause_reading()
            sending = asyncio.ensure_future(_send(writer, payload))
            peak, moved, still = 0.0, (0.0, 0.0), 0

            def quiet() -> bool:
                """True once bytes moved both ways and then stopped moving for 20 polls
                (the peers' buffers and the proxy's are full), noting the proxy's peak."""
                nonlocal peak, moved, still
                now = samples(proxy.render_metrics())
                peak = max(peak, now["aiotls_proxy_buffered_bytes"])
                key = 'aiotls_proxy_bytes_total{{direction="{}",route="default"}}'
                moving = (now.get(key.format("in"), 0), now.get(key.format("out"), 0))
                still = still + 1 if moving == moved and min(moving) > 0 else 0
                moved = moving
                return still >= 20

            await eventually(quiet, timeout=20)
            assert still >= 20, moved
            assert not sending.done()  # the client's writes are held up
            assert max(moved) < total // 4, moved  # what the peers' kernel buffers took
            assert peak <= 2 * buffer_size + (1 << 20)  # a buffer each way, a read's worth over
            gate.set()
            writer.transport.resume_reading()
            got = hashlib.sha256()
            async with asyncio.timeout(30):
                for _ in range(total >> 20):
                    got.update(await reader.readexactly(1 << 20))
                await sending
                assert await received == hashlib.sha256(payload).hexdigest()
            assert got.hexdigest() == hashlib.sha256(payload).hexdigest()
            await close(writer)


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    for i in range(0, len(data), 1 << 20):
        writer.write(data[i : i + (1 << 20)])
        await writer.drain()


async def test_metrics_endpoint(tmp_path, ca, certs, log_path):
    """Prometheus text that prometheus_client parses: connections by outcome, handshakes
    by result, the latency histogram, bytes each way, open connections."""
    async with backend(echo) as up:
        route = {"name": "web", **certs["localhost"], "backend": up.address}
        path = config(tmp_path, log_path, [route], metrics=f"{HOST}:0")
        async with running(path) as proxy:
            reader, writer = await connect(proxy_port(proxy), ca)
            writer.write(b"12345")
            assert await reader.readexactly(5) == b"12345"
            address = proxy.metrics_address()
            assert address is not None
            during = await scrape(address)
            await close(writer)
            await record_of(log_path)
            after = await scrape(address)
    assert during['aiotls_proxy_connections_open{route="web"}'] == 1
    assert during['aiotls_proxy_handshakes_total{result="ok"}'] == 1
    assert during["aiotls_proxy_handshake_seconds_count"] == 1
    assert during['aiotls_proxy_handshake_seconds_bucket{le="+Inf"}'] == 1
    assert during['aiotls_proxy_bytes_total{direction="in",route="web"}'] == 5
    assert after['aiotls_proxy_connections_total{outcome="ok",route="web"}'] == 1
    assert after['aiotls_proxy_connections_open{route="web"}'] == 0
    assert after['aiotls_proxy_bytes_total{direction="out",route="web"}'] == 5


async def test_reload_keeps_live_connections(tmp_path, ca, certs, log_path):
    """A reload to another backend and certificate: the connection opened before goes on
    with the old ones, new connections get the new; a broken file is refused and the
    running configuration stays."""
    async with backend(greeter("old")) as old, backend(greeter("new")) as new:
        path = config(tmp_path, log_path, [{**certs["localhost"], "backend": old.address}])
        async with running(path) as proxy:
            reader, writer = await connect(proxy_port(proxy), ca)
            assert await reader.readline() == b"old\n"
            config(tmp_path, log_path, [{**certs["a"], "backend": new.address}])
            assert proxy.reload() is True
            writer.write(b"still here\n")
            assert await reader.readline() == b"still here\n"
            r2, w2 = await connect(proxy_port(proxy), ca, servername="a.test")
            assert await r2.readline() == b"new\n"
            (tmp_path / "proxy.toml").write_text("[proxy\n")
            assert proxy.reload() is False
            r3, w3 = await connect(proxy_port(proxy), ca, servername="a.test")
            assert await r3.readline() == b"new\n"
            for w in (writer, w2, w3):
                await close(w)
            metrics = proxy.render_metrics()
    assert 'aiotls_proxy_reloads_total{result="ok"} 1' in metrics
    assert 'aiotls_proxy_reloads_total{result="failed"} 1' in metrics


@pytest.mark.skipif(not aiotls.features()["ticket_keys"], reason="no ticket key access")
async def test_tickets_resume_across_reloads_until_rotation(tmp_path, ca, certs, log_path):
    async with backend(greeter("hi")) as up:
        path = config(tmp_path, log_path, [{**certs["localhost"], "backend": up.address}])
        async with running(path) as proxy:
            sessions: list[bytes] = []

            async def resumed(**kw: Any) -> bool:
                reader, writer = await connect(
                    proxy_port(proxy), ca, on_session=sessions.append, **kw
                )
                assert await reader.readline() == b"hi\n"
                reused = writer.get_extra_info("tls").session_reused
                await close(writer)
                return bool(reused)

            assert not await resumed()
            assert await resumed(session=sessions[-1])
            assert proxy.reload()
            assert await resumed(session=sessions[-1])  # the keys survive a reload
            proxy.rotate_ticket_keys()
            assert not await resumed(session=sessions[-1])  # one key: old tickets are gone
            assert proxy.metrics.ticket_key_rotations == 2  # at start, then by hand


@pytest.mark.skipif(not aiotls.features()["ticket_keys"], reason="no ticket key access")
async def test_session_from_another_policy_is_refused(tmp_path, ca, certs, log_path):
    """A session made on the default route (no client certificates) resumed with the name
    of a route that requires one: refused, never forwarded."""
    ca_file = tmp_path / "clients-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with backend(greeter("open")) as open_, backend(greeter("guarded")) as guarded:
        routes = [
            {"name": "open", **certs["localhost"], "backend": open_.address},
            {"name": "guarded", "sni": ["a.test"], **certs["localhost"], "backend": guarded.address,
             "client_auth": {"mode": "require", "ca": str(ca_file)}},
        ]  # fmt: skip
        async with running(config(tmp_path, log_path, routes)) as proxy:
            sessions: list[bytes] = []
            reader, writer = await connect(proxy_port(proxy), ca, on_session=sessions.append)
            assert await reader.readline() == b"open\n"
            await close(writer)
            reader, writer = await connect(
                proxy_port(proxy), ca, "a.test", session=sessions[-1],
                check_server_identity=lambda host, cert: None,
            )  # fmt: skip
            assert writer.get_extra_info("tls").session_reused
            assert await read_all(reader) == b""
            await close(writer)
            records = await record_of(log_path, 2)
    assert records[1]["outcome"] == "forbidden" and "policy" in records[1]["error"]
    assert not guarded.connections


async def test_unix_sockets_both_sides(tmp_path, ca, certs, log_path):
    """The proxy listens on a unix socket and forwards to one; its PROXY header then
    says UNSPEC (no IP addresses to tell), with the TLS facts."""
    seen: asyncio.Queue[Any] = asyncio.Queue()

    async def check(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        start = await reader.readexactly(16)
        rest = await reader.readexactly(int.from_bytes(start[14:16], "big"))
        await seen.put((start[13], rest))
        await echo(reader, writer)
        writer.close()

    backend_path = tmp_path / "b.sock"
    up = await asyncio.start_unix_server(check, str(backend_path))
    try:
        route = {**certs["localhost"], "backend": f"unix:{backend_path}", "proxy_protocol": True}
        path = config(tmp_path, log_path, [route], listen=f"unix:{tmp_path / 'p.sock'}")
        async with running(path) as proxy:
            assert proxy.address() == f"unix:{tmp_path / 'p.sock'}"
            reader, writer = await aiotls.open_connection(
                path=str(tmp_path / "p.sock"), ca=ca.cert_pem.bytes(), servername="localhost"
            )
            writer.write(b"over unix")
            assert await reader.readexactly(9) == b"over unix"
            await close(writer)
            family, rest = await asyncio.wait_for(seen.get(), 5)
            (record,) = await record_of(log_path)
    finally:
        up.close()
    assert family == 0x00 and b"localhost" in rest and b"TLSv1.3" in rest
    assert record["outcome"] == "ok" and record["peer"] is None


async def test_ocsp_stapling_option_is_passed_through(tmp_path, ca, certs, log_path):
    """ocsp_stapling = "auto" on a route asks the server for automatic stapling; an aiotls
    without that option refuses the configuration by name."""
    async with backend(greeter("hi")) as up:
        route = {**certs["localhost"], "backend": up.address, "ocsp_stapling": "auto"}
        proxy = Proxy(load_config(config(tmp_path, log_path, [route])))
        try:
            await proxy.start()
        except ProxyConfigError as exc:
            assert "ocsp_stapling" in str(exc)
            pytest.skip("this aiotls has no ocsp_stapling server option yet")
        try:
            reader, writer = await connect(proxy_port(proxy), ca, request_ocsp=True)
            assert await reader.readline() == b"hi\n"
            await close(writer)
        finally:
            await proxy.drain()


async def test_without_access_log_failures_are_logged(tmp_path, ca, certs, caplog):
    """access_log = "off": a connection that did not end well still leaves a line."""
    caplog.set_level(logging.INFO, logger="aiotls.proxy")
    async with backend(greeter("hi")) as up:
        route = {**certs["localhost"], "backend": up.address, "max_connections": 1}
        path = write_config(tmp_path / "p.toml", {**PROXY, "access_log": "off"}, [route])
        async with running(path) as proxy:
            first = await connect(proxy_port(proxy), ca)
            reader, writer = await connect(proxy_port(proxy), ca)
            assert await read_all(reader) == b""
            await close(writer)
            await eventually(lambda: "limit" in caplog.text)
            await close(first[1])
    assert ": limit: route 'default' has 1 connections" in caplog.text


async def test_client_dropping_tcp_after_the_backend_finished_is_ok(tmp_path, ca, certs, log_path):
    """Like many HTTP clients: the backend answers and closes, the client reads to the
    end and drops TCP without close_notify. Nothing was cut: outcome ok, both sides
    closed (a stdlib ssl client, which closes without close_notify)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"bye\n")

    def client(port: int) -> bytes:
        context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
        with socket.create_connection((HOST, port), timeout=10) as raw:
            tls = context.wrap_socket(raw, server_hostname="localhost")
            tls.sendall(b"hello\n")
            data = b""
            while chunk := tls.recv(100):
                data += chunk
            return data  # leaving the block closes TCP, without close_notify

    async with backend(answer) as up:
        path = config(tmp_path, log_path, [{**certs["localhost"], "backend": up.address}])
        async with running(path) as proxy:
            assert await asyncio.to_thread(client, proxy_port(proxy)) == b"bye\n"
            (record,) = await record_of(log_path)
    assert record["outcome"] == "ok", record
