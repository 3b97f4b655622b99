"""Helpers of the Node-parity tests (tests/test_parity_*.py).

- :class:`Pki`: a key, its chain and the CA to trust, as PEM text (and files, for peers);
- :func:`serving` / :func:`connected` / :func:`refused`: an aiotls echo server on
  127.0.0.1 and aiotls client connections to it, each step bounded by :data:`STEP`;
- :func:`node_client` / :func:`node_server`: tests/node/info_client.js and info_server.js,
  which print what node sees of each connection as JSON (see tests/node/info_common.js);
- well-known DH primes as PEM parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dh
from peers import HOST, PeerProcess, require, run_peer
from util import echo

import aiotls

NODE_DIR = Path(__file__).parent / "node"
#: Upper bound of each network step (connect + handshake, one echo, a peer's run).
STEP = 10.0
PEM = serialization.Encoding.PEM

TLS12 = {"max_version": "TLSv1.2"}
TLS13 = {"min_version": "TLSv1.3"}
#: aiotls options that pin a connection to one version.
VERSIONS = {"TLSv1.2": TLS12, "TLSv1.3": TLS13}


# -- certificates --------------------------------------------------------------------


@dataclass
class Pki:
    """A server or client identity as PEM text: key, chain (leaf first), and the CA to trust.

    ``ca`` is the trustme CA that issued it, when there is one (to issue more, sign CRLs).
    """

    key: str
    chain: str
    ca_pem: str
    ca: trustme.CA | None = None

    @classmethod
    def of(cls, ca: trustme.CA, leaf: trustme.LeafCert) -> Pki:
        return cls(
            leaf.private_key_pem.bytes().decode(),
            "".join(blob.bytes().decode() for blob in leaf.cert_chain_pems),
            ca.cert_pem.bytes().decode(),
            ca,
        )

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.chain.encode())

    @property
    def fingerprint256(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex(":").upper()

    def identity(self) -> dict[str, str]:
        """Options presenting this identity (server, or client certificate)."""
        return {"key": self.key, "cert": self.chain}

    def write(self, directory: Path) -> dict[str, str]:
        """key, cert (chain) and ca as files, for peers that take paths."""
        out = {}
        for name, text in {"key": self.key, "cert": self.chain, "ca": self.ca_pem}.items():
            path = directory / f"{name}.pem"
            path.write_text(text)
            out[name] = str(path)
        return out


def issue(ca: trustme.CA, key_type: trustme.KeyType = trustme.KeyType.ECDSA, **kw: Any) -> Pki:
    """A leaf of ``ca`` for localhost, 127.0.0.1 and ::1."""
    return Pki.of(ca, ca.issue_cert("localhost", "127.0.0.1", "::1", key_type=key_type, **kw))


# -- DH parameters -------------------------------------------------------------------

#: RFC 7919 ffdhe2048 and RFC 2409 group 2 (1024-bit MODP): well-known safe primes, g = 2.
FFDHE2048_P = (
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695"
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A"
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935"
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A"
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4"
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61"
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005"
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B423861285C97FFFFFFFFFFFFFFFF"
)
MODP1024_P = (
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF"
)


@contextlib.contextmanager
def quiet_ffdh() -> Iterator[None]:
    """cryptography deprecates finite-field DH; these tests use it on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Diffie-Hellman over finite fields")
        yield


def dh_pem(p: dh.DHParameters | str) -> str:
    with quiet_ffdh():
        params = dh.DHParameterNumbers(int(p, 16), 2).parameters() if isinstance(p, str) else p
        return params.parameter_bytes(PEM, serialization.ParameterFormat.PKCS3).decode()


# -- aiotls servers and clients ------------------------------------------------------


@dataclass
class Served:
    """A running aiotls echo server: its port, what it accepted, its handshake failures.

    ``inspected`` holds what the ``inspect`` callable of :func:`serving` returned for each
    connection, called as the handshake completes (while the connection is surely open).
    """

    port: int
    accepted: list[aiotls.TLSTransport] = field(default_factory=list)
    inspected: list[Any] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


async def quiet_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """util.echo, for peers that may hang up without close_notify (node refusing a cert)."""
    with contextlib.suppress(aiotls.TLSError, ConnectionError):
        await echo(reader, writer)


@contextlib.asynccontextmanager
async def serving(
    *, host: str = HOST, inspect: Callable[[aiotls.TLSTransport], Any] | None = None, **options: Any
) -> AsyncIterator[Served]:
    """An aiotls echo server on ``host`` built from ``options`` (context options or context=)."""
    served = Served(0)

    def secure(transport: aiotls.TLSTransport) -> None:
        served.accepted.append(transport)
        if inspect is not None:
            served.inspected.append(inspect(transport))

    server = await aiotls.start_server(
        quiet_echo, host, 0,
        on_secure_connection=secure,
        on_tls_client_error=lambda exc, transport: served.errors.append(exc),
        shutdown_timeout=2.0,
        **options,
    )  # fmt: skip
    address = server.address()
    assert isinstance(address, dict)
    served.port = address["port"]
    try:
        yield served
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def connected(
    port: int, *, host: str = HOST, round_trip: bool = True, **options: Any
) -> AsyncIterator[aiotls.TLSTransport]:
    """An aiotls client connection to ``host``:``port``, open while the block runs.

    With ``round_trip`` (for echoing servers) "ping" is sent and its echo awaited first, so
    that what follows the handshake has arrived (TLS 1.3 session tickets, a TLS 1.3
    server's refusal of our certificate). Defaults: SNI and identity check "localhost",
    shutdown_timeout 2 s.
    """
    options.setdefault("servername", "localhost")
    options.setdefault("shutdown_timeout", 2.0)
    async with asyncio.timeout(STEP):
        reader, writer = await aiotls.open_connection(host, port, **options)
    try:
        if round_trip:
            async with asyncio.timeout(STEP):
                writer.write(b"ping")
                assert await reader.readexactly(4) == b"ping"
        transport = writer.transport
        assert isinstance(transport, aiotls.TLSTransport)
        yield transport
    finally:
        writer.close()
        with contextlib.suppress(aiotls.TLSError, ConnectionError, TimeoutError):
            async with asyncio.timeout(STEP):
                await writer.wait_closed()


async def refused(port: int, **options: Any) -> BaseException:
    """The error that ends a client connection attempt (the test fails if there is none)."""
    try:
        async with connected(port, **options):
            pass
    except (aiotls.TLSError, ConnectionError, asyncio.IncompleteReadError) as exc:
        return exc
    raise AssertionError(f"the connection with {options} was not refused")


async def session_of(port: int, **options: Any) -> tuple[bool, bytes | None]:
    """(session_reused, get_session()) of one client connection."""
    async with connected(port, **options) as tls:
        return tls.session_reused, tls.get_session()


def error_code(exc: BaseException) -> str:
    return str(getattr(exc, "code", type(exc).__name__))


# -- node peers ----------------------------------------------------------------------


def node_reports(peer: PeerProcess) -> list[dict[str, Any]]:
    """The JSON reports (one per connection) an info_*.js script printed."""
    lines = bytes(peer.stdout).decode().splitlines()
    return [json.loads(line) for line in lines if line.startswith('{"side"')]


async def node_client(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Run tests/node/info_client.js with ``config`` to the end; its reports."""
    node = require("node")
    config = {"host": HOST, **config}
    async with run_peer(node, str(NODE_DIR / "info_client.js"), json.dumps(config)) as peer:
        assert await peer.wait(STEP) == 0, str(peer)
    return node_reports(peer)


@dataclass
class NodeServer:
    port: int
    peer: PeerProcess

    async def reports(self) -> list[dict[str, Any]]:
        """Wait until the server has served its connections and exited; its reports."""
        assert await self.peer.wait(STEP) == 0, str(self.peer)
        return node_reports(self.peer)


@contextlib.asynccontextmanager
async def node_server(config: dict[str, Any]) -> AsyncIterator[NodeServer]:
    """tests/node/info_server.js listening (on 127.0.0.1 unless config["listen"])."""
    node = require("node")
    async with run_peer(node, str(NODE_DIR / "info_server.js"), json.dumps(config)) as peer:
        (port,) = await peer.wait_for_output(r'^\{"port":(\d+)\}$')
        yield NodeServer(int(port), peer)
