"""Node's TLSSocket surface: the getters a TLSTransport offers, and the two views of it.

:class:`TLSSocketMixin` holds the read-only questions one asks of a TLS connection
(certificate, cipher, protocol, session, addresses), answered from the engine;
:class:`TLSSocket` is ``get_extra_info("tls")``; :class:`SSLObjectShim` is
``get_extra_info("ssl_object")`` for code written against asyncio's ssl.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import certinfo

if TYPE_CHECKING:
    from ..clienthello import ClientHello
    from ..engine import TLSEngine

__all__ = ["SSLObjectShim", "TLSSocket", "TLSSocketMixin"]


class TLSSocketMixin:
    """Node's TLSSocket getters, for a class that has an engine and knows when it closed."""

    __slots__ = ()

    _engine: TLSEngine

    def _is_closed(self) -> bool:
        raise NotImplementedError

    def _is_server(self) -> bool:
        raise NotImplementedError

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        raise NotImplementedError

    encrypted = True

    @property
    def engine(self) -> TLSEngine:
        """The sans-I/O engine underneath."""
        return self._engine

    @property
    def servername(self) -> str | None:
        """The SNI name sent (client) or received (server)."""
        return self._engine.servername

    @property
    def client_hello(self) -> ClientHello | None:
        """Server with on_client_hello: the client's parsed ClientHello (None before)."""
        return self._engine.hello

    @property
    def alpn_protocol(self) -> str | bool:
        """The negotiated ALPN protocol, False when none."""
        return self._engine.alpn_protocol

    @property
    def session_reused(self) -> bool:
        return self._engine.session_reused

    def get_tls_protocol(self) -> str | None:
        """Node's getProtocol(): "TLSv1.3", ..., "unknown" mid-handshake, None after close."""
        if self._is_closed():
            return None
        return self._engine.get_protocol()

    def get_cipher(self) -> dict[str, str] | None:
        """Node's getCipher(): ``{"name", "standardName", "version"}``."""
        return self._engine.get_cipher()

    def get_peer_certificate(self, detailed: bool = False) -> dict[str, Any] | None:
        """Node's getPeerCertificate(): {} when the peer sent none, None after close."""
        return None if self._is_closed() else self._engine.get_peer_certificate(detailed)

    def get_certificate(self) -> dict[str, Any] | None:
        """Our own certificate in Node's shape."""
        return self._engine.get_certificate()

    def get_ephemeral_key_info(self) -> dict[str, Any] | None:
        """The key exchange's ephemeral key (client side; None on the server, as in Node)."""
        return None if self._is_server() else self._engine.get_ephemeral_key_info()

    def set_max_send_fragment(self, size: int) -> bool:
        """Node's setMaxSendFragment: records no larger than ``size`` (512..16384)."""
        return self._engine.set_max_send_fragment(size)

    @property
    def npn_protocol(self) -> str | bool:
        """The NPN result, False when none (Node's npnProtocol)."""
        return self._engine.npn_protocol

    def get_tls_ticket(self) -> bytes | None:
        """The session ticket inside the current session (Node's getTLSTicket)."""
        return self._engine.get_tls_ticket()

    def get_x509_certificate(self) -> Any:
        """Our certificate as a cryptography ``x509.Certificate``."""
        return self._engine.get_x509_certificate()

    def get_peer_x509_certificate(self) -> Any:
        """The peer's certificate as a cryptography ``x509.Certificate`` (None if none)."""
        return self._engine.get_peer_x509_certificate()

    def get_session(self) -> bytes | None:
        return self._engine.get_session()

    def get_finished(self) -> bytes | None:
        return self._engine.get_finished()

    def get_peer_finished(self) -> bytes | None:
        return self._engine.get_peer_finished()

    def export_keying_material(
        self, length: int, label: str | bytes, context: bytes | None = None
    ) -> bytes:
        return self._engine.export_keying_material(length, label, context)

    def address(self) -> dict[str, Any]:
        """Node's socket.address(): ``{"address", "family", "port"}``."""
        sockname = self.get_extra_info("sockname")
        if isinstance(sockname, tuple):
            family = "IPv6" if ":" in sockname[0] else "IPv4"
            return {"address": sockname[0], "family": family, "port": sockname[1]}
        return {"address": sockname, "family": "Unix", "port": None}

    @property
    def local_address(self) -> str | None:
        return self.address()["address"]  # type: ignore[no-any-return]

    @property
    def local_port(self) -> int | None:
        return self.address()["port"]  # type: ignore[no-any-return]

    @property
    def remote_address(self) -> str | None:
        peer = self.get_extra_info("peername")
        if isinstance(peer, tuple):
            return str(peer[0])
        return peer if isinstance(peer, str) else None

    @property
    def remote_port(self) -> int | None:
        peer = self.get_extra_info("peername")
        return peer[1] if isinstance(peer, tuple) else None

    @property
    def remote_family(self) -> str | None:
        peer = self.get_extra_info("peername")
        if isinstance(peer, tuple):
            return "IPv6" if ":" in peer[0] else "IPv4"
        return None


class TLSSocket:
    """Node's TLSSocket surface of a TLSTransport: ``get_extra_info("tls")``.

    Everything the transport offers, except that ``get_protocol()`` is Node's (the
    TLS version string) rather than asyncio's (the protocol object).
    """

    __slots__ = ("transport",)

    def __init__(self, transport: TLSSocketMixin) -> None:
        self.transport = transport

    def get_protocol(self) -> str | None:
        """ "TLSv1.3", "TLSv1.2", ...; "unknown" mid-handshake; None after close."""
        return self.transport.get_tls_protocol()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class SSLObjectShim:
    """The few ``ssl.SSLObject`` methods that asyncio-ssl code (aiohttp) calls."""

    __slots__ = ("_tls",)

    def __init__(self, tls: TLSSocketMixin) -> None:
        self._tls = tls

    def getpeercert(self, binary_form: bool = False) -> Any:
        cert = self._tls.engine.get_peer_x509_certificate()
        if cert is None:
            return None
        if binary_form:
            from cryptography.hazmat.primitives.serialization import Encoding

            return cert.public_bytes(Encoding.DER)
        return certinfo.stdlib_peercert(cert)

    def selected_alpn_protocol(self) -> str | None:
        proto = self._tls.alpn_protocol
        return proto if isinstance(proto, str) else None

    def version(self) -> str | None:
        return self._tls.get_tls_protocol()

    def cipher(self) -> tuple[str, str, int] | None:
        return self._tls.get_extra_info("cipher")  # type: ignore[no-any-return]

    @property
    def server_hostname(self) -> str | None:
        return self._tls.servername
