"""``aiotls demo``: a TLS echo round trip over loopback, and what it negotiated.

:func:`run_demo` makes an ephemeral CA and a server certificate in memory
(:mod:`aiotls.pki`), starts an aiotls server on 127.0.0.1 (a free port), connects
an aiotls client that verifies the server against that CA, echoes a message and
returns a :class:`DemoResult`; :func:`format_table` and :meth:`DemoResult.to_json`
render it for people and for programs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from . import ocsp, pki
from ._aio.client import open_connection
from ._aio.server import start_server
from .context import create_secure_context

__all__ = ["DemoResult", "describe_group", "format_rows", "format_table", "name_text", "run_demo"]

HOST = "127.0.0.1"
SERVERNAME = "localhost"
SERVER_ALPN = ("h2", "http/1.1")
CLIENT_ALPN = ("http/1.1",)
MESSAGE = b"hello from aiotls: the quick brown fox jumps over the lazy dog\n"
TLS_VERSIONS = {"1.2": "TLSv1.2", "1.3": "TLSv1.3"}


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What one demo connection negotiated and exchanged."""

    address: str
    port: int
    protocol: str | None
    cipher: str | None
    cipher_standard_name: str | None
    group: str | None
    group_description: str
    post_quantum: bool
    alpn: str | None
    servername: str
    server_saw_servername: str | None
    peer_subject: str
    peer_issuer: str
    peer_fingerprint256: str
    authorized: bool
    bytes_echoed: int
    handshake_ms: float
    tour: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field, plus ``"ok": True``."""
        return {"ok": True, **asdict(self)}


def describe_group(group: str | None) -> tuple[str, bool]:
    """A readable description of a key-exchange group and whether it is post-quantum.

    OpenSSL 3.5+ negotiates hybrid groups such as X25519MLKEM768 (classical X25519
    combined with ML-KEM-768, FIPS 203), which protect today's traffic against a
    future quantum computer ("harvest now, decrypt later").
    """
    if not group:
        return "unknown", False
    upper = group.upper()
    for marker, kem in (("MLKEM", "ML-KEM-"), ("KYBER", "Kyber-")):
        if marker in upper:
            at = upper.index(marker)
            classical, size = group[:at], group[at + len(marker) :]
            kem_name = f"{kem}{size}" if size else kem.rstrip("-")
            if classical:
                return f"post-quantum hybrid: {classical} + {kem_name}", True
            return f"post-quantum: {kem_name}", True
    if upper.startswith("FFDHE"):
        return "classical finite-field Diffie-Hellman", False
    return "classical elliptic-curve Diffie-Hellman", False


def _name_text(name: object) -> str:
    """Node's subject/issuer object ({"CN": "localhost", ...}) as ``CN=localhost, ...``."""
    if not isinstance(name, dict):
        return str(name)
    parts = []
    for key, value in name.items():
        for item in value if isinstance(value, list) else [value]:
            parts.append(f"{key}={item}")
    return ", ".join(parts)


def _peer_identity(tls: Any) -> tuple[str, str, str]:
    """Subject, issuer and SHA-256 fingerprint of the server's certificate.

    Taken from Node's getPeerCertificate() shape; if that is unavailable, computed
    from the cryptography certificate object.
    """
    try:
        info = tls.get_peer_certificate()
    except Exception:  # certinfo trouble must not hide the rest of the demo
        info = None
    if info and info.get("subject") is not None and info.get("fingerprint256"):
        return (
            _name_text(info["subject"]),
            _name_text(info.get("issuer", "")),
            str(info["fingerprint256"]),
        )
    cert = tls.engine.get_peer_x509_certificate()
    if cert is None:
        return "(none)", "(none)", "(none)"
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return name_text(cert.subject), name_text(cert.issuer), fingerprint


def name_text(name: x509.Name) -> str:
    """A certificate name in the same ``O=..., CN=...`` form (certificate order)."""
    return ", ".join(f"{attr.rfc4514_attribute_name}={attr.value!s}" for attr in name)


async def _tour(ca: pki.CA) -> dict[str, str]:
    """The hooks asyncio's ssl lacks, each shown on a real handshake over loopback:
    SNI choosing a certificate, an OCSP staple, a resumed session, and a session
    resumed on a second server through a shared store."""
    key_pem, chain_pem = ca.issue([SERVERNAME, HOST])
    api_key, api_chain = ca.issue(["api.example.test"])
    store: dict[bytes, bytes] = {}
    staples: list[bytes | None] = []

    def staple(cert: x509.Certificate, issuer: x509.Certificate | None) -> bytes:
        return ca.ocsp_response(cert)

    async def lookup(session_id: bytes) -> bytes | None:
        await asyncio.sleep(0)  # any awaitable store (Redis, a database...) fits here
        return store.get(session_id)

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok\n")
        writer.close()

    async def connect(server: Any, name: str, **kw: Any) -> dict[str, Any]:
        reader, writer = await open_connection(
            HOST, server.address()["port"], ca=ca.cert_pem, servername=name, **kw
        )
        await reader.readline()
        tls = writer.get_extra_info("tls")
        seen = {
            "san": tls.get_peer_certificate()["subjectaltname"],
            "cert": tls.get_peer_x509_certificate(),
            "session": tls.get_session(),
            "reused": tls.session_reused,
        }
        writer.close()
        await writer.wait_closed()
        return seen

    # Tickets off: TLS 1.2 session ids, the kind an external store can share. The second
    # server has a context of its own (built alike, so the session id context matches),
    # as a server in another process would: a store makes its context look sessions up
    # there only, which a context shared with the first server would do for both.
    options: Any = {"key": key_pem, "cert": chain_pem, "secure_options": 0x4000}
    tls12 = {"max_version": "TLSv1.2"}
    first = await start_server(
        greet,
        HOST,
        0,
        context=create_secure_context(**options),
        on_ocsp_request=staple,
        on_new_session=store.__setitem__,
    )
    second = await start_server(
        greet, HOST, 0, context=create_secure_context(**options), on_resume_session=lookup
    )
    first.add_context("*.example.test", {"key": api_key, "cert": api_chain})
    tour: dict[str, str] = {}
    try:
        api = await connect(first, "api.example.test")
        tour["cert by SNI"] = f"api.example.test got the certificate for {api['san']}"
        full = await connect(
            first, SERVERNAME, request_ocsp=True, on_ocsp_response=staples.append, **tls12
        )
        status = ocsp.verify(staples[0] or b"", full["cert"], ca.cert).status
        tour["OCSP staple"] = f"{len(staples[0] or b'')} bytes, signed by the CA, says {status}"
        again = await connect(first, SERVERNAME, session=full["session"], **tls12)
        tour["resumed"] = "yes, on the same server" if again["reused"] else "no"
        other = await connect(second, SERVERNAME, session=full["session"], **tls12)
        tour["shared store"] = (
            "yes, a second server resumed it via on_resume_session" if other["reused"] else "no"
        )
    finally:
        for server in (first, second):
            server.close()
            await server.wait_closed()
    return tour


async def run_demo(tls_version: str | None = None, message: bytes = MESSAGE) -> DemoResult:
    """Run one echo round trip over TLS on loopback and report what was negotiated.

    ``tls_version`` ("1.2" or "1.3") pins the client to that version; None lets
    the peers negotiate (TLS 1.3 with any current OpenSSL). ``message`` must be a
    single line ending in a newline. Raises on any failure, including a message
    that does not come back intact.
    """
    if not message.endswith(b"\n") or b"\n" in message[:-1]:
        raise ValueError("message: expected a single line ending in a newline")
    version_opts: dict[str, Any] = {}
    if tls_version is not None:
        if tls_version not in TLS_VERSIONS:
            raise ValueError(f"tls_version: expected one of {', '.join(TLS_VERSIONS)}")
        version_opts = {
            "min_version": TLS_VERSIONS[tls_version],
            "max_version": TLS_VERSIONS[tls_version],
        }

    ca = pki.make_ca("aiotls demo CA")
    key_pem, chain_pem = ca.issue([SERVERNAME, HOST, "::1"])
    server_ctx = create_secure_context(key=key_pem, cert=chain_pem, alpn_protocols=SERVER_ALPN)
    handlers: set[asyncio.Task[Any]] = set()
    seen_servername: list[str | None] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            handlers.add(task)
        seen_servername.append(writer.get_extra_info("tls").servername)
        try:
            line = await reader.readline()
            writer.write(line)
            await writer.drain()
            await reader.read()  # until the client's close_notify
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await start_server(echo, HOST, 0, context=server_ctx)
    try:
        port = server.sockets[0].getsockname()[1]
        started = time.perf_counter()
        reader, writer = await open_connection(
            HOST,
            port,
            ca=ca.cert_pem,
            servername=SERVERNAME,
            alpn_protocols=list(CLIENT_ALPN),
            **version_opts,
        )
        handshake_ms = (time.perf_counter() - started) * 1000
        try:
            tls = writer.get_extra_info("tls")
            writer.write(message)
            await writer.drain()
            echoed = await reader.readline()
            if echoed != message:
                raise RuntimeError(f"echo mismatch: sent {message!r}, got back {echoed!r}")
            cipher = tls.get_cipher() or {}
            group = tls.engine.get_group_name()
            description, post_quantum = describe_group(group)
            subject, issuer, fingerprint = _peer_identity(tls)
            alpn = tls.alpn_protocol
            result = DemoResult(
                address=HOST,
                port=port,
                protocol=tls.get_protocol(),
                cipher=cipher.get("name"),
                cipher_standard_name=cipher.get("standardName"),
                group=group,
                group_description=description,
                post_quantum=post_quantum,
                alpn=alpn if isinstance(alpn, str) else None,
                servername=SERVERNAME,
                # the handler recorded it before echoing, so it is known by now
                server_saw_servername=seen_servername[0] if seen_servername else None,
                peer_subject=subject,
                peer_issuer=issuer,
                peer_fingerprint256=fingerprint,
                authorized=bool(tls.authorized),
                bytes_echoed=len(echoed),
                handshake_ms=round(handshake_ms, 3),
                tour=await _tour(ca),
            )
        finally:
            writer.close()
            await writer.wait_closed()
        if handlers:
            await asyncio.gather(*handlers, return_exceptions=True)
    finally:
        server.close()
        await server.wait_closed()
    return result


def format_table(result: DemoResult) -> str:
    """The result as an aligned two-column table for a terminal."""
    cipher = result.cipher or "(none)"
    if result.cipher_standard_name and result.cipher_standard_name != result.cipher:
        cipher = f"{cipher} ({result.cipher_standard_name})"
    group = f"{result.group or '(unknown)'} ({result.group_description})"
    alpn = result.alpn or "(none)"
    alpn += f"   [client offered {', '.join(CLIENT_ALPN)}; server accepts {', '.join(SERVER_ALPN)}]"
    sni = result.servername
    if result.server_saw_servername is not None:
        sni += f" (server saw {result.server_saw_servername})"
    rows = [
        ("server", f"{result.address}:{result.port}"),
        ("protocol", result.protocol or "(unknown)"),
        ("cipher", cipher),
        ("key exchange", group),
        ("ALPN", alpn),
        ("SNI", sni),
        ("peer subject", result.peer_subject),
        ("peer issuer", result.peer_issuer),
        ("peer SHA-256", result.peer_fingerprint256),
        ("authorized", "yes (chain and host name verified)" if result.authorized else "NO"),
        ("echo", f"{result.bytes_echoed} bytes sent and received back intact"),
        ("handshake", f"{result.handshake_ms:.1f} ms (TCP connect + TLS handshake)"),
        *result.tour.items(),
    ]
    return format_rows("aiotls demo: TLS echo over loopback with an ephemeral CA", rows)


def format_rows(title: str, rows: Sequence[tuple[str, str]]) -> str:
    """``title``, a blank line, then ``rows`` as an aligned two-column table."""
    width = max(len(label) for label, _ in rows)
    lines = [title, ""]
    lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)
