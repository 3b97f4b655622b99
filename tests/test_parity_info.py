"""The TLSSocket getters of aiotls against Node's, on real connections over loopback.

tests/node/info_server.js and info_client.js print, per connection, what node reports
(getCertificate, getPeerCertificate(true), getCipher, getProtocol, getFinished,
getPeerFinished, exportKeyingMaterial, getEphemeralKeyInfo, isSessionReused, alpnProtocol,
servername, authorized, authorizationError and the socket addresses). An aiotls client talks
to the node server and a node client to an aiotls server, with the same certificates; both
ends of one connection must agree (exported keying material, finished messages crosswise,
protocol, cipher, ALPN, resumption), and aiotls and node in the same role must describe the
same certificates with the same dicts.

Intended differences from node:
- on a resumed connection a node client's ``getPeerCertificate()`` is {}; aiotls's is the
  leaf kept in the session (what node's server side reports too);
- ``get_ephemeral_key_info()`` on a server is None (node: null); for the hybrid
  X25519MLKEM768 group, which node 20 cannot negotiate, aiotls reports
  ``{"type": "KEM", "name": "X25519MLKEM768"}`` (there is no peer key to measure);
- a server that has no SNI name reports ``servername`` None where node reports false: so
  on a resumed TLS 1.2 session, where OpenSSL (3.0 and 4) keeps no name, on both servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import math
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec as ec_keys
from cryptography.x509.oid import NameOID
from parity import (
    FFDHE2048_P,
    HOST,
    PEM,
    STEP,
    TLS12,
    VERSIONS,
    Pki,
    connected,
    dh_pem,
    issue,
    node_client,
    node_server,
    refused,
    serving,
)

import aiotls

pytestmark = pytest.mark.timeout(20)  # each network step is bounded by STEP (10 s)

EKM = (32, "test-label", b"ctx")  # what info_common.js exports too


# -- certificates --------------------------------------------------------------------


@pytest.fixture(scope="module")
def root() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def chained(root: trustme.CA) -> Pki:
    """An ECDSA server leaf under an intermediate: a chain of three to compare."""
    return Pki.of(root, root.create_child_ca().issue_cert("localhost", "127.0.0.1", "::1"))


@pytest.fixture(scope="module")
def client_pki(root: trustme.CA) -> Pki:
    """An RSA client certificate (RSA fields: modulus, exponent) under an intermediate."""
    leaf = root.create_child_ca().issue_cert(
        "client@example.test", common_name="client", key_type=trustme.KeyType.RSA
    )
    return Pki.of(root, leaf)


@pytest.fixture(scope="module")
def files(
    chained: Pki, client_pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, str]]:
    return {
        "server": chained.write(tmp_path_factory.mktemp("server")),
        "client": client_pki.write(tmp_path_factory.mktemp("client")),
    }


# -- aiotls's side, shaped as info_common.js reports node's --------------------------


def jsonable(value: Any) -> Any:
    """``value`` as it would look after JSON (bytes as hex, tuples as lists)."""
    return json.loads(json.dumps(value, default=lambda b: bytes(b).hex()))


def flatten(cert: dict[str, Any] | None) -> dict[str, Any]:
    """A detailed certificate as info_common.js's flattenChain shapes node's."""
    chain: list[dict[str, Any]] = []
    seen: set[int] = set()
    circular = False
    while cert:
        if id(cert) in seen:
            circular = True
            break
        seen.add(id(cert))
        chain.append({k: v for k, v in cert.items() if k != "issuerCertificate"})
        cert = cert.get("issuerCertificate")
    return jsonable({"chain": chain, "circular": circular})


def aiotls_view(tls: aiotls.TLSTransport) -> dict[str, Any]:
    """What info_common.js's describe() reports, read from an aiotls transport."""
    finished, peer_finished = tls.get_finished(), tls.get_peer_finished()
    return jsonable({
        "protocol": tls.get_extra_info("tls").get_protocol(),
        "cipher": tls.get_cipher(),
        "ephemeralKeyInfo": tls.get_ephemeral_key_info(),
        "certificate": tls.get_certificate() or {},
        "peerCertificate": flatten(tls.get_peer_certificate(True)),
        "finished": finished.hex() if finished else None,
        "peerFinished": peer_finished.hex() if peer_finished else None,
        "ekm": tls.export_keying_material(*EKM).hex(),
        "sessionReused": tls.session_reused,
        "alpnProtocol": tls.alpn_protocol,
        "servername": tls.servername,
        "authorized": tls.authorized,
        "authorizationError": tls.authorization_error,
        "encrypted": tls.encrypted,
        "localAddress": tls.local_address,
        "localPort": tls.local_port,
        "remoteAddress": tls.remote_address,
        "remotePort": tls.remote_port,
        "remoteFamily": tls.remote_family,
        "address": tls.address(),
    })  # fmt: skip


# -- one connection, both ends -------------------------------------------------------


def assert_same_connection(ours: dict[str, Any], theirs: dict[str, Any], version: str) -> None:
    """aiotls's view and node's view of the two ends of one connection agree."""
    assert ours["protocol"] == theirs["protocol"] == version
    assert ours["cipher"] == theirs["cipher"]
    assert ours["cipher"]["version"] == version  # the suites here are all TLS 1.2+ or 1.3
    # RFC 5705 / 8446 exporters: both ends derive the same bytes.
    assert ours["ekm"] == theirs["ekm"]
    assert len(bytes.fromhex(ours["ekm"])) == 32
    # What one end sent as Finished is what the other received.
    assert ours["finished"] == theirs["peerFinished"]
    assert ours["peerFinished"] == theirs["finished"]
    assert ours["finished"] != ours["peerFinished"]
    assert ours["alpnProtocol"] == theirs["alpnProtocol"] == "http/1.1"
    assert ours["sessionReused"] == theirs["sessionReused"]
    assert ours["encrypted"] is theirs["encrypted"] is True
    assert ours["authorized"] is theirs["authorized"] is True
    assert ours["authorizationError"] is theirs["authorizationError"] is None
    # Socket addresses, seen from the two ends.
    assert (ours["localAddress"], ours["localPort"]) == (
        theirs["remoteAddress"],
        theirs["remotePort"],
    )
    assert (ours["remoteAddress"], ours["remotePort"]) == (
        theirs["localAddress"],
        theirs["localPort"],
    )
    assert ours["remoteFamily"] == theirs["remoteFamily"] == "IPv4"


def node_server_names(version: str) -> list[Any]:
    """Node's server ``servername`` on the full then the resumed connection: OpenSSL keeps
    no SNI name on a resumed TLS 1.2 session. aiotls reports the ClientHello's each time."""
    return ["localhost", "localhost" if version == "TLSv1.3" else None]


def server_options(chained: Pki, version: str) -> dict[str, Any]:
    """aiotls options of the servers below: client certificates required, ALPN."""
    return {
        **chained.identity(), "ca": chained.ca_pem, "request_cert": True,
        "alpn_protocols": ["h2", "http/1.1"], **VERSIONS[version],
    }  # fmt: skip


def node_server_config(files: dict[str, dict[str, str]], version: str) -> dict[str, Any]:
    """The same server in node's terms."""
    return {
        "key": files["server"]["key"], "cert": files["server"]["cert"],
        "ca": files["server"]["ca"], "requestCert": True, "rejectUnauthorized": True,
        "ALPNProtocols": ["h2", "http/1.1"], "minVersion": version, "maxVersion": version,
    }  # fmt: skip


@pytest.fixture(params=list(VERSIONS))
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def node_client_views(
    version: str, chained: Pki, files: dict[str, dict[str, str]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A node client connecting twice (the 2nd resuming) to an aiotls server: both views."""
    async with serving(**server_options(chained, version), inspect=aiotls_view) as served:
        reports = await node_client({
            "port": served.port, "servername": "localhost", "ca": files["client"]["ca"],
            "key": files["client"]["key"], "cert": files["client"]["cert"],
            "ALPNProtocols": ["http/1.1"], "minVersion": version, "maxVersion": version,
            "connections": 2,
        })  # fmt: skip
        assert not served.errors
        return reports, served.inspected


@pytest.fixture
async def aiotls_client_views(
    version: str, chained: Pki, client_pki: Pki, files: dict[str, dict[str, str]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """An aiotls client connecting twice (the 2nd resuming) to a node server: both views."""
    client = {
        **client_pki.identity(), "ca": chained.ca_pem, "alpn_protocols": ["http/1.1"],
        **VERSIONS[version],
    }  # fmt: skip
    views = []
    async with node_server({**node_server_config(files, version), "connections": 2}) as node:
        async with connected(node.port, **client) as tls:
            views.append(aiotls_view(tls))
            session = tls.get_session()
        async with connected(node.port, session=session, **client) as tls:
            views.append(aiotls_view(tls))
        reports = await node.reports()
    return views, reports


async def test_aiotls_client_and_node_server_agree(
    version: str, aiotls_client_views: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    ours, theirs = aiotls_client_views
    assert [r.get("error") for r in theirs] == [None, None], theirs
    for mine, node in zip(ours, theirs, strict=True):
        assert_same_connection(mine, node, version)
        assert mine["servername"] == "localhost"  # what the client sent
        assert node["ephemeralKeyInfo"] is None  # a server's
    assert [v["sessionReused"] for v in ours] == [False, True]
    assert [n["servername"] or None for n in theirs] == node_server_names(version)
    # The server certificate: what node says of its own is what aiotls says of its peer's.
    assert ours[0]["peerCertificate"]["chain"][0] == theirs[0]["certificate"]
    # And the client certificate the other way round.
    assert theirs[0]["peerCertificate"]["chain"][0] == ours[0]["certificate"]


async def test_node_client_and_aiotls_server_agree(
    version: str, node_client_views: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    theirs, ours = node_client_views
    assert [r.get("error") for r in theirs] == [None, None], theirs
    for mine, node in zip(ours, theirs, strict=True):
        assert_same_connection(mine, node, version)
        assert node["servername"] == "localhost"  # what the client sent
        assert mine["ephemeralKeyInfo"] is None  # a server's, as node's
    assert [v["sessionReused"] for v in ours] == [False, True]
    assert [v["servername"] for v in ours] == ["localhost", "localhost"]  # not node's None
    assert ours[0]["peerCertificate"]["chain"][0] == theirs[0]["certificate"]
    assert theirs[0]["peerCertificate"]["chain"][0] == ours[0]["certificate"]


async def test_peer_certificate_chains_match_node(
    version: str,
    aiotls_client_views: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    node_client_views: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    chained: Pki,
    client_pki: Pki,
) -> None:
    """getPeerCertificate(true), field by field, in the same role, for the same certificates."""
    aiotls_clients, node_servers = aiotls_client_views
    node_clients, aiotls_servers = node_client_views
    pairs = {
        # (what, connection): (aiotls's view, node's view); connection 1 is the resumed one.
        ("server chain, seen by the clients", 0): (aiotls_clients[0], node_clients[0]),
        ("client chain, seen by the servers", 0): (aiotls_servers[0], node_servers[0]),
        ("client leaf, from the session", 1): (aiotls_servers[1], node_servers[1]),
    }
    for where, (ours, theirs) in pairs.items():
        mine, node = ours["peerCertificate"], theirs["peerCertificate"]
        assert len(mine["chain"]) == len(node["chain"]), where
        for depth, (a, b) in enumerate(zip(mine["chain"], node["chain"], strict=True)):
            assert list(a) == list(b), (*where, depth)  # the same keys, in node's order
            for key in b:
                assert a[key] == b[key], (*where, depth, key)
        assert mine["circular"] is node["circular"], where  # a root is its own issuer
    # Intended difference: on a resumed connection a node *client* returns {} (it reads the
    # peer's chain, which a resumed session does not hold); aiotls returns the leaf from the
    # session, as both servers do.
    assert node_clients[1]["peerCertificate"] == {"chain": [], "circular": False}
    assert (
        aiotls_clients[1]["peerCertificate"]["chain"]
        == (aiotls_clients[0]["peerCertificate"]["chain"][:1])
    )
    aiotls_client, aiotls_server = aiotls_clients[0], aiotls_servers[0]
    node_client_seen, node_server_seen = node_clients[0], node_servers[0]
    # On the full handshakes: leaf, intermediate, root.
    for view in (aiotls_client, aiotls_server):
        assert len(view["peerCertificate"]["chain"]) == 3
        assert view["peerCertificate"]["circular"] is True
    # Our own certificates (getCertificate()) too.
    assert aiotls_client["certificate"] == node_client_seen["certificate"]
    assert aiotls_server["certificate"] == node_server_seen["certificate"]
    # And they are the certificates we meant.
    fingerprints = [c["fingerprint256"] for c in aiotls_client["peerCertificate"]["chain"]]
    assert fingerprints[0] == chained.fingerprint256
    assert aiotls_server["peerCertificate"]["chain"][0]["fingerprint256"] == (
        client_pki.fingerprint256
    )
    assert "modulus" in aiotls_server["peerCertificate"]["chain"][0]  # the RSA one


# -- get_ephemeral_key_info ----------------------------------------------------------


@pytest.fixture(scope="module")
def rsa() -> Pki:
    return issue(trustme.CA(key_type=trustme.KeyType.RSA), trustme.KeyType.RSA)


@pytest.fixture(scope="module")
def rsa_files(rsa: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return rsa.write(tmp_path_factory.mktemp("rsa"))


KEY_EXCHANGES = {  # name -> (aiotls server options, aiotls client options, node client options)
    "P-256": ({"ecdh_curve": "P-256"}, {}, {}),
    "X25519": ({"ecdh_curve": "X25519"}, {}, {}),
    "P-384 TLS 1.2": ({"ecdh_curve": "P-384"}, TLS12, {"maxVersion": "TLSv1.2"}),
    "DHE": (
        {"dhparam": dh_pem(FFDHE2048_P)},
        # Offering no ffdhe group, so the server's dhparam is used (see test_parity_context).
        {"ciphers": "DHE-RSA-AES128-GCM-SHA256", "ecdh_curve": "X25519", **TLS12},
        {"ciphers": "DHE-RSA-AES128-GCM-SHA256", "maxVersion": "TLSv1.2"},
    ),
    "RSA key exchange": (
        {"ciphers": "AES128-GCM-SHA256"},
        {"ciphers": "AES128-GCM-SHA256", **TLS12},
        {"ciphers": "AES128-GCM-SHA256", "maxVersion": "TLSv1.2"},
    ),
}
EXPECTED_KEY_INFO = {
    "P-256": {"type": "ECDH", "name": "prime256v1", "size": 256},
    "X25519": {"type": "ECDH", "name": "X25519", "size": 253},
    "P-384 TLS 1.2": {"type": "ECDH", "name": "secp384r1", "size": 384},
    "DHE": {"type": "DH", "size": 2048},
    "RSA key exchange": {},  # not ephemeral
}


@pytest.mark.parametrize("exchange", list(KEY_EXCHANGES))
async def test_ephemeral_key_info_matches_node(
    exchange: str, rsa: Pki, rsa_files: dict[str, str]
) -> None:
    server, client, node_options = KEY_EXCHANGES[exchange]
    async with serving(**rsa.identity(), **server) as served:
        async with connected(served.port, ca=rsa.ca_pem, **client) as tls:
            ours = tls.get_ephemeral_key_info()
            assert served.accepted[0].get_ephemeral_key_info() is None  # server side
        (report,) = await node_client(
            {"port": served.port, "servername": "localhost", "ca": rsa_files["ca"], **node_options}
        )
    assert ours == report["ephemeralKeyInfo"] == EXPECTED_KEY_INFO[exchange]


async def test_ephemeral_key_info_of_the_post_quantum_group(rsa: Pki) -> None:
    # aiotls <-> aiotls negotiate X25519MLKEM768 by default; node 20 cannot (no ML-KEM).
    async with (
        serving(**rsa.identity()) as served,
        connected(served.port, ca=rsa.ca_pem) as tls,
    ):
        assert tls.engine.get_group_name() == "X25519MLKEM768"
        assert tls.get_ephemeral_key_info() == {"type": "KEM", "name": "X25519MLKEM768"}


# -- set_max_send_fragment -----------------------------------------------------------


class RecordProxy:
    """A TCP proxy to 127.0.0.1:``target`` that notes the TLS records sent server->client.

    ``records`` holds (content type, length) from each 5-byte record header, in order.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.records: list[tuple[int, int]] = []
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RecordProxy]:
        server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            # Both ends have closed by now: the pipes end by themselves (or are cut short).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STEP):
                    await asyncio.gather(*self._tasks, return_exceptions=True)
            for task in self._tasks:
                task.cancel()
            await server.wait_closed()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            server_r, server_w = await asyncio.open_connection(HOST, self.target)
            try:
                await asyncio.gather(
                    self._pipe(client_r, server_w, parse=False),
                    self._pipe(server_r, client_w, parse=True),
                )
            finally:
                server_w.close()
        except (asyncio.CancelledError, ConnectionError):
            pass  # only at teardown, once the test has what it needs
        finally:
            client_w.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, parse: bool
    ) -> None:
        pending = bytearray()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if parse:
                    pending += data
                    while len(pending) >= 5:
                        length = int.from_bytes(pending[3:5], "big")
                        if len(pending) < 5 + length:
                            break
                        self.records.append((pending[0], length))
                        del pending[: 5 + length]
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()


def test_record_proxy_parses_headers() -> None:
    """The proxy's parser on hand-made records split at odd places."""
    proxy = RecordProxy(0)
    stream = b"\x16\x03\x03\x00\x02ab" + b"\x17\x03\x03\x00\x03xyz" + b"\x15\x03\x03\x00\x02!!"

    class Feed:
        def __init__(self, chunks: list[bytes]) -> None:
            self.chunks = chunks

        async def read(self, n: int) -> bytes:
            return self.chunks.pop(0) if self.chunks else b""

    class Sink:
        data = b""

        def write(self, data: bytes) -> None:
            self.data += data

        async def drain(self) -> None:
            pass

        def can_write_eof(self) -> bool:
            return False

    sink = Sink()
    chunks = [stream[:3], stream[3:9], stream[9:]]
    asyncio.run(proxy._pipe(Feed(chunks), sink, parse=True))  # type: ignore[arg-type]
    assert proxy.records == [(0x16, 2), (0x17, 3), (0x15, 2)]
    assert sink.data == stream


#: Most a record may grow over its plaintext with the AEAD suites used here (TLS 1.2 GCM:
#: 8-byte explicit nonce and 16-byte tag; TLS 1.3: content type byte and 16-byte tag).
AEAD_OVERHEAD = 24
PAYLOAD = os.urandom(100_000)


@pytest.mark.parametrize("version", list(VERSIONS))
@pytest.mark.parametrize("size", [512, 1000, 4096, 16384, None])
async def test_set_max_send_fragment_caps_records(size: int | None, version: str, rsa: Pki) -> None:
    answers: dict[str, Any] = {}

    async def send_payload(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = writer.get_extra_info("tls")
        writer.write(b"ready")  # after this record, only the payload follows
        assert await reader.readexactly(2) == b"go"
        # Outside 512..16384: refused, and nothing changes.
        answers["outside"] = [tls.set_max_send_fragment(n) for n in (0, 511, 16385, 1 << 20)]
        if size is not None:
            answers["size"] = tls.set_max_send_fragment(size)
        writer.write(PAYLOAD)
        await writer.drain()
        writer.close()

    server = await aiotls.start_server(
        send_payload, HOST, 0, **rsa.identity(), **VERSIONS[version], shutdown_timeout=2.0
    )
    try:
        async with RecordProxy(server.address()["port"]).running() as proxy:
            async with asyncio.timeout(STEP):
                reader, writer = await aiotls.open_connection(
                    HOST, proxy.port, ca=rsa.ca_pem, servername="localhost", shutdown_timeout=2.0
                )
                assert await reader.readexactly(5) == b"ready"
                mark = len(proxy.records)  # everything before the payload has gone by
                writer.write(b"go")
                received = await reader.read()  # to EOF: every byte arrives
                writer.close()
                with contextlib.suppress(aiotls.TLSError, ConnectionError):
                    await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()

    assert answers.pop("outside") == [False] * 4
    assert answers == ({} if size is None else {"size": True})
    assert received == PAYLOAD
    lengths = [length for _, length in proxy.records[mark:]]
    limit = size or 16384
    assert max(lengths) <= limit + AEAD_OVERHEAD
    assert len(lengths) >= math.ceil(len(PAYLOAD) / limit)
    assert max(lengths) > limit  # full records (plus their AEAD overhead) were sent


# -- authorized / authorization_error ------------------------------------------------


def self_signed() -> Pki:
    """A self-signed certificate for localhost."""
    key = ec_keys.generate_private_key(ec_keys.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_pem = cert.public_bytes(PEM).decode()
    key_pem = key.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Pki(key_pem.decode(), cert_pem, ca_pem=cert_pem)


def bad_servers(root: trustme.CA) -> dict[str, tuple[Pki, str]]:
    """Servers whose certificate a client trusting ``root`` must refuse: (pki, servername)."""
    now = datetime.datetime.now(datetime.UTC)
    stranger = trustme.CA()
    expired = root.issue_cert(
        "localhost",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    return {
        "DEPTH_ZERO_SELF_SIGNED_CERT": (self_signed(), "localhost"),
        "UNABLE_TO_VERIFY_LEAF_SIGNATURE": (issue(stranger), "localhost"),  # leaf only
        "UNABLE_TO_GET_ISSUER_CERT_LOCALLY": (  # leaf and intermediate, unknown root
            Pki.of(stranger, stranger.create_child_ca().issue_cert("localhost")),
            "localhost",
        ),
        "CERT_HAS_EXPIRED": (Pki.of(root, expired), "localhost"),
        "ERR_TLS_CERT_ALTNAME_INVALID": (issue(root), "evil.test"),
    }


@pytest.fixture(scope="module")
def refusals(root: trustme.CA) -> dict[str, tuple[Pki, str]]:
    return bad_servers(root)


@pytest.fixture(scope="module")
def root_file(root: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("root") / "root.pem"
    root.cert_pem.write_to_path(str(path))
    return str(path)


REFUSALS = [
    "DEPTH_ZERO_SELF_SIGNED_CERT",
    "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
    "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
    "CERT_HAS_EXPIRED",
    "ERR_TLS_CERT_ALTNAME_INVALID",
]


@pytest.mark.parametrize("code", REFUSALS)
async def test_authorization_error_matches_node(
    code: str, refusals: dict[str, tuple[Pki, str]], root: trustme.CA, root_file: str
) -> None:
    """reject_unauthorized=False: connected, and told why the server is not authorized."""
    pki, servername = refusals[code]
    async with serving(**pki.identity()) as served:
        async with connected(
            served.port, ca=root.cert_pem.bytes(), servername=servername, reject_unauthorized=False
        ) as tls:
            assert (tls.authorized, tls.authorization_error) == (False, code)
        (report,) = await node_client(
            {"port": served.port, "servername": servername, "ca": root_file,
             "rejectUnauthorized": False}
        )  # fmt: skip
    assert (report["authorized"], report["authorizationError"]) == (False, code)


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(
            code,
        )
        if code == "UNABLE_TO_VERIFY_LEAF_SIGNATURE"
        else code
        for code in REFUSALS
    ],
)
async def test_refusal_code_matches_node(
    code: str, refusals: dict[str, tuple[Pki, str]], root: trustme.CA, root_file: str
) -> None:
    """reject_unauthorized=True (the default): open_connection raises TLSError with the code."""
    pki, servername = refusals[code]
    async with serving(**pki.identity()) as served:
        (report,) = await node_client(
            {"port": served.port, "servername": servername, "ca": root_file}
        )
        exc = await refused(served.port, ca=root.cert_pem.bytes(), servername=servername)
    assert report["error"] == code
    assert isinstance(exc, aiotls.TLSCertificateError)
    assert exc.code == code


async def test_authorized_with_a_good_certificate_like_node(
    chained: Pki, files: dict[str, dict[str, str]]
) -> None:
    async with serving(**chained.identity()) as served:
        async with connected(served.port, ca=chained.ca_pem) as tls:
            assert (tls.authorized, tls.authorization_error) == (True, None)
            assert served.accepted[0].authorized is False  # no client certificate asked for
            assert served.accepted[0].authorization_error is None
        (report,) = await node_client(
            {"port": served.port, "servername": "localhost", "ca": files["server"]["ca"]}
        )
    assert (report["authorized"], report["authorizationError"]) == (True, None)


# -- addresses -----------------------------------------------------------------------


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


FAMILIES = {
    "IPv4": "127.0.0.1",
    "IPv6": pytest.param(
        "::1", marks=pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
    ),
}


def assert_addresses_agree(ours: dict[str, Any], theirs: dict[str, Any], family: str) -> None:
    """Two ends of one connection (aiotls's and node's views) name the same sockets."""
    assert (ours["localAddress"], ours["localPort"]) == (
        theirs["remoteAddress"],
        theirs["remotePort"],
    )
    assert (ours["remoteAddress"], ours["remotePort"]) == (
        theirs["localAddress"],
        theirs["localPort"],
    )
    assert ours["remoteFamily"] == theirs["remoteFamily"] == family
    assert ours["address"] == {
        "address": ours["localAddress"], "family": family, "port": ours["localPort"]
    }  # fmt: skip
    assert theirs["address"] == {
        "address": theirs["localAddress"], "family": family, "port": theirs["localPort"]
    }  # fmt: skip


@pytest.mark.parametrize("host", list(FAMILIES.values()), ids=list(FAMILIES))
async def test_addresses(host: str, chained: Pki, files: dict[str, dict[str, str]]) -> None:
    family = "IPv6" if ":" in host else "IPv4"
    async with serving(host=host, inspect=aiotls_view, **chained.identity()) as served:
        async with connected(served.port, host=host, ca=chained.ca_pem) as tls:
            (accepted,) = served.accepted
            sock = tls.get_extra_info("socket")
            local, peer = sock.getsockname()[:2], sock.getpeername()[:2]
            assert tls.address() == {"address": local[0], "family": family, "port": local[1]}
            assert (tls.local_address, tls.local_port) == local
            assert (tls.remote_address, tls.remote_port) == peer == (host, served.port)
            assert tls.remote_family == accepted.remote_family == family
            assert accepted.address() == {"address": host, "family": family, "port": served.port}
            assert (accepted.local_address, accepted.local_port) == (host, served.port)
            assert (accepted.remote_address, accepted.remote_port) == local
            assert tls.encrypted is accepted.encrypted is True
            assert tls.get_extra_info("tls").encrypted is True
        # A node client to the aiotls server, and an aiotls client to a node server.
        (report,) = await node_client(
            {"host": host, "port": served.port, "servername": "localhost",
             "ca": files["server"]["ca"]}
        )  # fmt: skip
        assert_addresses_agree(served.inspected[-1], report, family)
    async with node_server(
        {"key": files["server"]["key"], "cert": files["server"]["cert"], "listen": host}
    ) as node:
        async with connected(node.port, host=host, ca=chained.ca_pem) as tls:
            ours = aiotls_view(tls)
        (theirs,) = await node.reports()
    assert_addresses_agree(ours, theirs, family)
